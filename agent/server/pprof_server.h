// HTTP front end: Go's net/http/pprof contract for the target process, plus /healthz and
// /metrics, on the agent's own HttpServer (http_server.h: bounded connections and requests,
// separate workers for profile windows). Generic over a ProfileRegistry: every registered kind
// is served at /debug/pprof/<name> with its declared parameters checked here, listed on the
// index page, and asked for its /healthz lines and /metrics. cmdline and symbol, which are not
// profiles, are served here. Testable without privileges (a fake sampler behind the CPU source).
#ifndef PPROF_SIDECAR_AGENT_SERVER_PPROF_SERVER_H_
#define PPROF_SIDECAR_AGENT_SERVER_PPROF_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "agent/registry/profile_registry.h"
#include "agent/server/http_server.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/target/target_discovery.h"

namespace pprof_sidecar {

struct ServerOptions {
  int max_profile_seconds = 300;
  // Profile windows (CPU profiles, deltas) in progress at once; more are answered 503. Other
  // requests have their own workers, so windows never delay /healthz or /metrics.
  size_t max_concurrent_windows = 64;
  HttpServer::Options http;  // connection, size and time limits
};

// Where the current target comes from (TargetTracker in production, a lambda in tests).
struct TargetView {
  std::function<std::optional<ProcessInfo>()> current;
  std::function<std::string()> status;  // why there is none / how it was chosen
};

class PprofServer {
 public:
  // `registry` is complete (every kind added) and outlives the server.
  PprofServer(const ProfileRegistry* registry, ProcessSymbolizer* symbolizer, TargetView target,
              ServerOptions opts);
  ~PprofServer();

  // Binds; port 0 picks a free port (see port()). Errors name the address.
  absl::Status Bind(const std::string& host, int port);
  // Serves until Stop() and the drain that follows (HttpServer::Shutdown).
  absl::Status Serve();
  // Async-signal-safe: stops accepting; profile windows in progress are cut short and served.
  void Stop();
  int port() const { return server_->port(); }

  // Prometheus text exposition: every kind's metrics, the symbolizer's and the server's.
  std::string MetricsText() const;
  // /healthz body; `ready` receives whether every readiness-gating kind is available.
  std::string HealthText(bool* ready) const;

 private:
  void Register();
  void RegisterKind(ProfileSource* source);
  void CountRequest(int status);
  void ServeKind(ProfileSource* source, const HttpRequest& req, const RequestContext& ctx,
                 HttpResponse* res);
  void ServeIndex(HttpResponse* res) const;
  void ServeCmdline(HttpResponse* res) const;
  void ServeSymbol(const HttpRequest& req, HttpResponse* res) const;
  void ServeUnregistered(const HttpRequest& req, HttpResponse* res) const;
  void WriteServerMetrics(MetricsWriter* w) const;

  const ProfileRegistry* const registry_;
  ProcessSymbolizer* const symbolizer_;
  const TargetView target_;
  const ServerOptions opts_;
  std::unique_ptr<HttpServer> server_;
  mutable std::mutex mu_;
  std::map<int, uint64_t> requests_by_code_;
  std::atomic<uint64_t> profiles_served_{0};
};

// Error responses exactly as net/http/pprof's serveError writes them.
void ServePprofError(HttpResponse* res, int status, const std::string& text);
// The HTTP status for a source's error (profile_source.h); 0 for Cancelled.
int HttpCodeFor(const absl::Status& st);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SERVER_PPROF_SERVER_H_
