#include "agent/server/pprof_server.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/server/http_params.h"

namespace pprof_sidecar {
namespace {

// Lanes (HttpServer): cheap requests, lookups, and profile windows each have their own workers.
enum Lane { kControlLane = 0, kQueryLane = 1, kWindowLane = 2 };
constexpr char kPrefix[] = "/debug/pprof/";

bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

// The first value of each query parameter (Go's r.FormValue). Error: a malformed query.
absl::StatusOr<std::map<std::string, std::string>> FirstValues(const HttpRequest& req) {
  auto kv = ParseQuery(req.query);
  if (!kv.ok()) return kv.status();
  std::map<std::string, std::string> first;
  for (auto& [k, v] : *kv) first.emplace(k, v);
  return first;
}

std::optional<std::string> Get(const std::map<std::string, std::string>& q, const char* k) {
  auto it = q.find(k);
  if (it == q.end()) return std::nullopt;
  return it->second;
}

void Redirect(const std::string& to, HttpResponse* res) {
  res->status = 301;
  res->SetHeader("Location", to);
  res->SetContent(absl::StrCat("<a href=\"", to, "\">Moved Permanently</a>.\n"),
                  "text/html; charset=utf-8");
}

// A HEAD costs no window; a kind that holds one does for GET; a delta kind only with ?seconds.
int LaneFor(const ProfileKindInfo& k, const HttpRequest& req) {
  if (req.method == "HEAD") return kControlLane;
  switch (k.seconds) {
    case ProfileKindInfo::Seconds::kWindow:
      return kWindowLane;
    case ProfileKindInfo::Seconds::kDelta: {
      auto q = FirstValues(req);
      return q.ok() && Get(*q, "seconds") ? kWindowLane : kQueryLane;
    }
    case ProfileKindInfo::Seconds::kNone:
      break;
  }
  return kQueryLane;
}

// Fills debug and seconds from the query as `k` declares them. Error: InvalidArgument.
absl::Status ParseKindParams(const ProfileKindInfo& k, const std::map<std::string, std::string>& q,
                             int max_seconds, ProfileRequest* pr) {
  if (auto d = Get(q, "debug"); d && !k.debug_levels.empty()) {
    int v = 0;
    if (!absl::SimpleAtoi(*d, &v) ||
        std::find(k.debug_levels.begin(), k.debug_levels.end(), v) == k.debug_levels.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("debug=", *d, " is not served by pprof-sidecar for ", k.name,
                       "; accepted: ", absl::StrJoin(k.debug_levels, ", "),
                       k.debug_levels.size() == 1 ? " (omit debug for the protobuf profile)" : ""));
    }
    pr->debug = v;
  }
  if (k.seconds == ProfileKindInfo::Seconds::kNone) return absl::OkStatus();
  const bool window = k.seconds == ProfileKindInfo::Seconds::kWindow;
  auto secs = ParseSecondsParam(Get(q, "seconds"), window ? k.default_seconds : 0, max_seconds);
  if (!secs.ok()) return secs.status();
  pr->seconds = absl::Seconds(*secs);
  return absl::OkStatus();
}

}  // namespace

void ServePprofError(HttpResponse* res, int status, const std::string& text) {
  res->status = status;
  res->RemoveHeader("Content-Disposition");
  res->SetHeader("X-Go-Pprof", "1");
  res->SetHeader("X-Content-Type-Options", "nosniff");
  res->SetContent(text + "\n", "text/plain; charset=utf-8");
}

int HttpCodeFor(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 503;
    case absl::StatusCode::kCancelled:
      return 0;
    default:
      return 500;
  }
}

PprofServer::PprofServer(const ProfileRegistry* registry, ProcessSymbolizer* symbolizer,
                         TargetView target, ServerOptions opts)
    : registry_(registry),
      symbolizer_(symbolizer),
      target_(std::move(target)),
      opts_(opts),
      server_(std::make_unique<HttpServer>(opts.http)) {
  Register();
}

PprofServer::~PprofServer() { Stop(); }

void PprofServer::CountRequest(int status) {
  std::lock_guard<std::mutex> l(mu_);
  ++requests_by_code_[status];
}

void PprofServer::Register() {
  HttpServer& s = *server_;
  // Lane ids must match enum Lane.
  s.AddLane("control", 4, 256);
  s.AddLane("lookup", 4, 64);
  s.AddLane("profile window", opts_.max_concurrent_windows, 0);
  // Counted before the response is written, so a client reading /metrics after its response
  // always sees its own request.
  s.SetObserver([this](const HttpRequest*, const HttpResponse& res) { CountRequest(res.status); });
  const std::vector<std::string> kGet = {"GET"};
  auto control = [](auto fn) {
    return [fn](const HttpRequest& req, const RequestContext&, HttpResponse* res) { fn(req, res); };
  };
  auto redirect = control([](const HttpRequest&, HttpResponse* res) { Redirect(kPrefix, res); });
  s.Handle(kGet, "/", kControlLane, redirect);
  s.Handle(kGet, "/debug/pprof", kControlLane, redirect);
  s.Handle(kGet, kPrefix, kControlLane,
           control([this](const HttpRequest&, HttpResponse* res) { ServeIndex(res); }));
  for (ProfileSource* src : registry_->Sources()) RegisterKind(src);
  s.Handle(kGet, "/debug/pprof/cmdline", kControlLane,
           control([this](const HttpRequest&, HttpResponse* res) { ServeCmdline(res); }));
  s.Handle({"GET", "POST"}, "/debug/pprof/symbol", kQueryLane,
           control([this](const HttpRequest& req, HttpResponse* res) { ServeSymbol(req, res); }));
  s.HandlePrefix(
      kGet, kPrefix, kControlLane,
      control([this](const HttpRequest& req, HttpResponse* res) { ServeUnregistered(req, res); }));
  s.Handle(kGet, "/healthz", kControlLane, control([this](const HttpRequest&, HttpResponse* res) {
             bool ready = true;
             std::string text = HealthText(&ready);
             if (!ready) res->status = 503;
             res->SetContent(text, "text/plain; charset=utf-8");
           }));
  // Liveness: the server answers (readiness is /healthz).
  s.Handle(kGet, "/livez", kControlLane, control([](const HttpRequest&, HttpResponse* res) {
             res->SetContent("ok\n", "text/plain; charset=utf-8");
           }));
  s.Handle(kGet, "/metrics", kControlLane, control([this](const HttpRequest&, HttpResponse* res) {
             res->SetContent(MetricsText(), "text/plain; version=0.0.4; charset=utf-8");
           }));
}

void PprofServer::RegisterKind(ProfileSource* src) {
  const ProfileKindInfo& k = src->info();
  auto lane = [src](const HttpRequest& req) { return LaneFor(src->info(), req); };
  auto handler = [this, src](const HttpRequest& req, const RequestContext& ctx, HttpResponse* res) {
    ServeKind(src, req, ctx, res);
  };
  server_->Handle({"GET"}, kPrefix + k.name, lane, handler);
  if (k.subpaths) server_->HandlePrefix({"GET"}, kPrefix + k.name + "/", lane, handler);
}

void PprofServer::ServeKind(ProfileSource* src, const HttpRequest& req, const RequestContext& ctx,
                            HttpResponse* res) {
  const ProfileKindInfo& k = src->info();
  res->SetHeader("X-Content-Type-Options", "nosniff");
  auto q = FirstValues(req);
  if (!q.ok()) return ServePprofError(res, 400, std::string(q.status().message()));
  ProfileRequest pr;
  if (absl::Status st = ParseKindParams(k, *q, opts_.max_profile_seconds, &pr); !st.ok()) {
    return ServePprofError(res, 400, std::string(st.message()));
  }
  const std::string base = kPrefix + k.name;
  if (req.path.size() > base.size()) pr.subpath = req.path.substr(base.size() + 1);
  if (k.needs_target) {
    pr.target = target_.current();
    if (!pr.target) {
      return ServePprofError(res, 503, absl::StrCat("no target process: ", target_.status()));
    }
    pr.comments.push_back(absl::StrCat("pprof-sidecar: target pid ", pr.target->pid, " (",
                                       pr.target->comm, ") ", pr.target->exe));
  }
  const bool binary = pr.debug == 0 && !k.filename.empty();
  if (binary) {
    const bool delta =
        k.seconds == ProfileKindInfo::Seconds::kDelta && pr.seconds > absl::ZeroDuration();
    res->SetHeader("Content-Type", "application/octet-stream");
    res->SetHeader("Content-Disposition", absl::StrCat("attachment; filename=\"", k.filename,
                                                       delta ? "-delta" : "", "\""));
  } else {
    res->SetHeader("Content-Type", "text/plain; charset=utf-8");
  }
  if (req.method == "HEAD") return;  // the headers a GET would start with, without its work
  pr.params = *std::move(q);
  if (const std::string* accept = req.Header("accept")) pr.accept = *accept;
  pr.cancelled = [&ctx] { return ctx.client_gone(); };
  pr.cut_short = [&ctx] { return ctx.shutting_down(); };
  pr.cut_short_reason = "the agent is shutting down (SIGTERM)";
  absl::StatusOr<ProfileResponse> r = src->Collect(pr);
  if (!r.ok()) {
    const int code = HttpCodeFor(r.status());
    const std::string msg(r.status().message());
    return ServePprofError(res, code == 0 ? 500 : code,
                           k.error_prefix.empty() ? msg : absl::StrCat(k.error_prefix, ": ", msg));
  }
  profiles_served_.fetch_add(1);
  std::string type = r->content_type;
  if (type.empty()) type = binary ? "application/octet-stream" : "text/plain; charset=utf-8";
  res->SetContent(std::move(r->body), type);
}

void PprofServer::ServeCmdline(HttpResponse* res) const {
  res->SetHeader("X-Content-Type-Options", "nosniff");
  auto t = target_.current();
  if (!t) return ServePprofError(res, 503, absl::StrCat("no target process: ", target_.status()));
  std::string cmdline;
  if (!ReadWholeFile(absl::StrCat("/proc/", t->pid, "/cmdline"), &cmdline)) {
    return ServePprofError(res, 503, absl::StrCat("target pid ", t->pid, " exited"));
  }
  // Go writes os.Args joined by NUL, without a trailing NUL.
  if (!cmdline.empty() && cmdline.back() == '\0') cmdline.pop_back();
  res->SetContent(cmdline, "text/plain; charset=utf-8");
}

void PprofServer::ServeSymbol(const HttpRequest& req, HttpResponse* res) const {
  res->SetHeader("X-Content-Type-Options", "nosniff");
  // Go: the program counters come from the POST body, or else from the raw query string.
  std::string input = req.method == "POST" ? req.body : "";
  if (input.empty()) input = req.query;
  std::string out = "num_symbols: 1\n";
  auto t = target_.current();
  std::vector<uint64_t> pcs =
      req.method == "HEAD" ? std::vector<uint64_t>() : ParseSymbolRequest(input);
  if (!pcs.empty() && t) {
    auto session = symbolizer_->NewSession(t->pid);
    for (uint64_t pc : pcs) {
      ResolvedFrame f = session->ResolveUser(pc, false);
      if (!f.lines.empty()) {
        absl::StrAppend(&out, "0x", absl::Hex(pc), " ", f.lines.back().function, "\n");
      }
    }
  }
  res->SetContent(out, "text/plain; charset=utf-8");
}

// Names no source serves: Go's other profiles get 501 with why, anything else Go's 404.
void PprofServer::ServeUnregistered(const HttpRequest& req, HttpResponse* res) const {
  const std::string name = req.path.substr(std::string(kPrefix).size());
  if (const std::string* why = registry_->NotServedReason(name)) {
    std::vector<std::string> served;
    for (ProfileSource* s : registry_->Sources()) served.push_back(s->info().name);
    return ServePprofError(
        res, 501,
        absl::StrCat("profile \"", name, "\" is not served by pprof-sidecar: ", *why,
                     "; available: ", absl::StrJoin(served, ", "), ", cmdline, symbol"));
  }
  ServePprofError(res, 404, "Unknown profile");
}

absl::Status PprofServer::Bind(const std::string& host, int port) {
  return server_->Bind(host, port);
}

absl::Status PprofServer::Serve() { return server_->Serve(); }

void PprofServer::Stop() {
  if (server_) server_->Shutdown();
}

}  // namespace pprof_sidecar
