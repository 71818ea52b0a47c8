// PprofServer::AddSource: serves a registry ProfileSource that needs no target at
// /debug/pprof/<name>/... (the OOM recorder's "snapshots"), until the whole server is routed
// through the ProfileRegistry.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/server/pprof_server.h"

namespace pprof_sidecar {
namespace {

int HttpCode(const absl::Status& st) {
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
    default:
      return 500;
  }
}

}  // namespace

void PprofServer::AddSource(ProfileSource* src) {
  sources_.push_back(src);
  const std::string base = "/debug/pprof/" + src->info().name;
  server_->HandlePrefix(
      {"GET"}, base, /*lane=*/1,
      [src, base](const HttpRequest& req, const RequestContext&, HttpResponse* res) {
        const std::string rest = req.path.substr(base.size());
        auto error = [res](int code, const std::string& text) {
          res->status = code;
          res->SetHeader("X-Go-Pprof", "1");
          res->SetHeader("X-Content-Type-Options", "nosniff");
          res->SetContent(text + "\n", "text/plain; charset=utf-8");
        };
        if (rest.empty()) {
          res->status = 301;
          res->SetHeader("Location", base + "/");
          res->SetContent("", "text/html; charset=utf-8");
          return;
        }
        if (rest[0] != '/') return error(404, "Unknown profile");
        ProfileRequest pr;
        pr.subpath = rest.substr(1);
        if (auto kv = ParseQuery(req.query); kv.ok()) {
          for (const auto& [k, v] : *kv) pr.params.emplace(k, v);
        }
        const std::string* accept = req.Header("accept");
        if (accept != nullptr && absl::StrContains(*accept, "application/json")) {
          pr.params.emplace("format", "json");
        }
        absl::StatusOr<ProfileResponse> r = src->Collect(pr);
        if (!r.ok()) {
          return error(HttpCode(r.status()),
                       absl::StrCat(src->info().error_prefix, ": ", r.status().message()));
        }
        res->SetHeader("X-Content-Type-Options", "nosniff");
        res->SetContent(std::move(r->body), r->content_type);
      });
}

}  // namespace pprof_sidecar
