// PprofServer's pages built from the registry: the index (as Go's), /healthz and /metrics.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/server/pprof_server.h"

namespace pprof_sidecar {
namespace {

std::string HtmlEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '&':
        o += "&amp;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

struct IndexEntry {
  std::string name, href, description;
};

// Go's index lists profiles and the cmdline/symbol endpoints by name.
std::vector<IndexEntry> IndexEntries(const ProfileRegistry& registry) {
  std::vector<IndexEntry> v = {
      {"cmdline", "cmdline?debug=1", "The command line invocation of the target program"},
      {"symbol", "symbol",
       "Looks up the target's program counters listed in the request, responding with a table "
       "mapping program counters to function names."}};
  for (ProfileSource* s : registry.Sources()) {
    const ProfileKindInfo& k = s->info();
    v.push_back({k.name, k.subpaths ? k.name + "/" : k.name, k.description});
  }
  std::sort(v.begin(), v.end(),
            [](const IndexEntry& a, const IndexEntry& b) { return a.name < b.name; });
  return v;
}

}  // namespace

void PprofServer::ServeIndex(HttpResponse* res) const {
  auto t = target_.current();
  std::string target_line =
      t ? absl::StrCat("pid ", t->pid, " (", HtmlEscape(t->comm), ", ", HtmlEscape(t->exe), ")")
        : absl::StrCat("none: ", HtmlEscape(target_.status()));
  const std::vector<IndexEntry> entries = IndexEntries(*registry_);
  std::string html = absl::StrCat(
      "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/\n",
      "<p>Served by pprof-sidecar for target: ", target_line, "</p>\n",
      "<p>Types of profiles available:</p>\n<table>\n<thead><td>Count</td><td>Profile</td>"
      "</thead>\n");
  for (const IndexEntry& e : entries) {
    absl::StrAppend(&html, "<tr><td></td><td><a href='", e.href, "'>", e.name, "</a></td></tr>\n");
  }
  absl::StrAppend(&html, "</table>\n");
  if (!registry_->not_served().empty()) {
    std::vector<std::string> names;
    for (const auto& [name, why] : registry_->not_served()) names.push_back(name);
    absl::StrAppend(&html, "<p>Not served by pprof-sidecar: ", absl::StrJoin(names, ", "),
                    ".</p>\n");
  }
  absl::StrAppend(&html, "<br>\n<p>\nProfile Descriptions:\n<ul>\n");
  for (const IndexEntry& e : entries) {
    absl::StrAppend(&html, "<li><div class=profile-name>", e.name, ": </div> ",
                    HtmlEscape(e.description), "</li>\n");
  }
  absl::StrAppend(&html,
                  "</ul>\n</p>\n<p>Agent: <a href='/healthz'>/healthz</a> <a "
                  "href='/metrics'>/metrics</a></p>\n</body>\n</html>\n");
  res->SetHeader("X-Content-Type-Options", "nosniff");
  res->SetContent(html, "text/html; charset=utf-8");
}

std::string PprofServer::HealthText(bool* ready) const {
  auto t = target_.current();
  std::string why_not;
  for (ProfileSource* s : registry_->Sources()) {
    if (!s->info().gates_readiness) continue;
    if (absl::Status st = s->Availability(t); !st.ok()) {
      absl::StrAppend(&why_not, why_not.empty() ? "" : "; ", "/debug/pprof/", s->info().name,
                      " cannot be served");
    }
  }
  *ready = why_not.empty();
  std::string o = *ready ? "ok\n" : absl::StrCat("not ready: ", why_not, "\n");
  // Lines of the readiness-gating kinds (the agent's means) come first, then the target and what
  // the other kinds can read of it.
  std::string agent_lines, target_lines;
  for (ProfileSource* s : registry_->Sources()) {
    (s->info().gates_readiness ? agent_lines : target_lines) += s->HealthLines(t);
  }
  absl::StrAppend(&o, agent_lines);
  if (t) {
    absl::StrAppend(&o, "target: pid ", t->pid, " (", t->comm, ") ", t->exe, "\n", target_.status(),
                    "\n");
  } else {
    absl::StrAppend(&o, "target: none: ", target_.status(),
                    "\nprofile endpoints answer 503 until a target appears\n");
  }
  absl::StrAppend(&o, target_lines);
  return o;
}

std::string PprofServer::MetricsText() const {
  auto t = target_.current();
  MetricsWriter w;
  for (ProfileSource* s : registry_->Sources()) s->WriteMetrics(t, &w);
  const SymbolizerStats y = symbolizer_->stats();
  w.Gauge("pprof_sidecar_symbol_cache_binaries", "Binaries held in the symbol cache.",
          y.binaries_cached);
  w.Counter("pprof_sidecar_binary_open_errors_total", "Target binaries that could not be read.",
            y.binary_open_errors);
  w.Gauge("pprof_sidecar_target_pid", "Pid of the current target (0: none).", t ? t->pid : 0);
  WriteServerMetrics(&w);
  return w.text();
}

void PprofServer::WriteServerMetrics(MetricsWriter* w) const {
  const HttpServer::Stats hs = server_->stats();
  w->Gauge("pprof_sidecar_http_connections", "HTTP connections open.", hs.connections_open);
  w->Counter("pprof_sidecar_http_connections_total", "HTTP connections accepted.",
             hs.connections_total);
  w->Counter("pprof_sidecar_http_connections_evicted_total",
             "Idle or stalled HTTP connections closed to make room for new ones.",
             hs.connections_evicted);
  w->Counter("pprof_sidecar_http_timeouts_total",
             "HTTP requests not received, or responses not taken, in time.", hs.timeouts);
  w->CounterFamily("pprof_sidecar_http_rejected_total", "HTTP requests refused, by reason.",
                   "reason", {{"busy", hs.rejected_busy}, {"too_large", hs.rejected_limits}});
  std::vector<std::pair<std::string, double>> running;
  for (const auto& [lane, n] : hs.lane_running) running.emplace_back(lane, n);
  w->GaugeFamily("pprof_sidecar_http_requests_running", "HTTP requests being handled, by kind.",
                 "kind", running);
  w->Counter("pprof_sidecar_profiles_served_total", "Profiles served (any kind).",
             profiles_served_.load());
  std::vector<std::pair<std::string, double>> codes;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [code, n] : requests_by_code_) codes.emplace_back(absl::StrCat(code), n);
  }
  w->CounterFamily("pprof_sidecar_http_requests_total", "HTTP requests by status code.", "code",
                   codes);
}

}  // namespace pprof_sidecar
