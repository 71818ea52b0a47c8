// HTTP front end: Go's net/http/pprof contract for the target process, plus /healthz and
// /metrics, on the agent's own HttpServer (http_server.h: bounded connections and requests,
// separate workers for profile windows). Handlers only depend on CpuProfiler (which hides the
// sampler) and a view of the current target, so they are testable without privileges with a
// fake sampler.
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
#include "absl/status/statusor.h"
#include "agent/heap/heap_profiler.h"
#include "agent/profile/cpu_profiler.h"
#include "agent/registry/profile_source.h"
#include "agent/server/http_params.h"
#include "agent/server/http_server.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/target/target_discovery.h"

namespace pprof_sidecar {

struct ServerOptions {
  int max_profile_seconds = 300;
  int default_profile_seconds = 30;
  // Profile windows (CPU profiles, heap/allocs deltas) in progress at once; more are answered
  // 503. Other requests have their own workers, so windows never delay /healthz or /metrics.
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
  PprofServer(CpuProfiler* cpu, ProcessSymbolizer* symbolizer, TargetView target,
              ServerOptions opts);
  ~PprofServer();

  // Binds; port 0 picks a free port (see port()). Errors name the address.
  absl::Status Bind(const std::string& host, int port);
  // Serves until Stop() and the drain that follows (HttpServer::Shutdown).
  absl::Status Serve();
  // Async-signal-safe: stops accepting; profile windows in progress are cut short and served.
  void Stop();
  int port() const { return server_->port(); }
  // Serves /debug/pprof/heap and /debug/pprof/allocs from `heap` (else they answer 501). Call
  // before Serve().
  void SetHeapProfiler(HeapProfiler* heap) { heap_ = heap; }
  // Serves `source` (no target needed) at /debug/pprof/<name>/..., with its /healthz lines and
  // metrics (source_route.cc, until the server routes through the ProfileRegistry).
  void AddSource(ProfileSource* source);

  // Prometheus text exposition of all counters.
  std::string MetricsText() const;
  // /healthz: the CPU clock in use (or why CPU profiles cannot be taken) and the target.
  std::string HealthText(const CpuReadiness& cpu) const;

 private:
  void Register();
  // /healthz lines on a Go target: its release and the profiles that cannot be read, with why.
  std::string TargetProfiles(pid_t pid) const;
  void CountRequest(int status);
  void ServeIndex(const HttpRequest& req, HttpResponse* res);
  void ServeProfile(const HttpRequest& req, const RequestContext& ctx, HttpResponse* res);
  void ServeCmdline(const HttpRequest& req, HttpResponse* res);
  void ServeSymbol(const HttpRequest& req, HttpResponse* res);
  void ServeHeap(const HttpRequest& req, const RequestContext& ctx, HttpResponse* res);
  void ServeOtherProfile(const HttpRequest& req, HttpResponse* res);
  void ServeHealthz(HttpResponse* res);

  CpuProfiler* const cpu_;
  ProcessSymbolizer* const symbolizer_;
  HeapProfiler* heap_ = nullptr;
  const TargetView target_;
  const ServerOptions opts_;
  std::unique_ptr<HttpServer> server_;
  mutable std::mutex mu_;
  std::map<int, uint64_t> requests_by_code_;
  std::atomic<uint64_t> profiles_served_{0};
  std::vector<ProfileSource*> sources_;  // AddSource
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SERVER_PPROF_SERVER_H_
