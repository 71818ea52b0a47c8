// HTTP front end: Go's net/http/pprof contract for the target process, plus /healthz and
// /metrics. Handlers only depend on CpuProfiler (which hides the sampler) and a view of the
// current target, so they are testable without privileges with a fake sampler.
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
#include "agent/server/http_params.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/target/target_discovery.h"

namespace httplib {
class Server;
}

namespace pprof_sidecar {

struct ServerOptions {
  int max_profile_seconds = 300;
  int default_profile_seconds = 30;
  size_t worker_threads = 32;  // bounds concurrent requests (each CPU profile holds one)
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
  // Serves until Stop(). Returns an error if the server failed.
  absl::Status Serve();
  void Stop();
  int port() const { return port_; }
  // Serves /debug/pprof/heap and /debug/pprof/allocs from `heap` (else they answer 501). Call
  // before Serve().
  void SetHeapProfiler(HeapProfiler* heap) { heap_ = heap; }

  // Prometheus text exposition of all counters.
  std::string MetricsText() const;

 private:
  void Register();
  void CountRequest(int status);

  CpuProfiler* const cpu_;
  ProcessSymbolizer* const symbolizer_;
  HeapProfiler* heap_ = nullptr;
  const TargetView target_;
  const ServerOptions opts_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::map<int, uint64_t> requests_by_code_;
  std::atomic<uint64_t> profiles_served_{0};
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SERVER_PPROF_SERVER_H_
