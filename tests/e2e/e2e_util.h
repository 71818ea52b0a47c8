// Helpers for the end-to-end tests: run the real pprof-sidecar binary and real targets as child
// processes, talk to the agent over HTTP, measure the target's CPU time from /proc.
#ifndef PPROF_SIDECAR_TESTS_E2E_E2E_UTIL_H_
#define PPROF_SIDECAR_TESTS_E2E_E2E_UTIL_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testutil/pprof_summary.h"

namespace pprof_sidecar::testing {

// Path of the agent binary under test ($PPROF_SIDECAR_AGENT_BIN overrides the build's).
std::string AgentBinary();

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
int PickFreePort();

// Like BuildGo, but with a GOCACHE kept in the build tree across test processes: Go >= 1.20
// ships no precompiled standard library, and a cold build takes ~40 s on 2 cores. The cache is
// content-addressed, so reuse cannot produce a stale binary.
absl::StatusOr<std::string> BuildGoCached(const std::string& version, const std::string& src_dir,
                                          const std::string& flags, const std::string& out);

// How a child runs "as in a pod": the conditions of a Kubernetes container that the agent must
// work in, applied between fork and exec (as a container runtime does).
struct PodConditions {
  // A private mount namespace in which tracefs and debugfs are absent: an empty read-only tmpfs
  // covers /sys/kernel/tracing and /sys/kernel/debug, whatever the host has mounted there.
  bool hide_tracefs = true;
  // Capabilities (names as in capabilities(7) without CAP_, e.g. "BPF"): the bounding set is cut
  // to them, so the root child holds exactly these after exec. Empty: all (no change).
  std::vector<std::string> caps;
};
// The capabilities the chart and the manifests grant the agent (agent/webhook/injector.cc).
std::vector<std::string> ChartCapabilities();

// A child process in its own process group, stdin from /dev/null, stdout+stderr to `log_path`.
// The destructor SIGKILLs the whole group and reaps the child.
class Child {
 public:
  static absl::StatusOr<std::unique_ptr<Child>> Start(const std::vector<std::string>& argv,
                                                      const std::string& log_path,
                                                      const PodConditions* pod = nullptr);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // Exit status (as waitpid reports it) if the child has exited within `timeout`.
  std::optional<int> WaitExit(absl::Duration timeout);
  // SIGKILLs the process group and reaps the child (idempotent).
  void Kill();
  std::string Log() const;

 private:
  Child(pid_t pid, std::string log) : pid_(pid), log_path_(std::move(log)) {}
  pid_t pid_;
  std::string log_path_;
  bool reaped_ = false;
};

struct HttpResponse {
  int status = 0;
  std::string body, content_type, x_go_pprof, content_disposition, nosniff;
};

// GET http://127.0.0.1:port + path_and_query.
absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path_and_query,
                                     absl::Duration timeout = absl::Seconds(10));

// The real agent listening on 127.0.0.1 on a free port.
class Agent {
 public:
  // Starts AgentBinary() with `flags` plus --listen_address (unless given), as in a pod (`pod`;
  // by default no tracefs and the chart's capabilities), and waits until /healthz answers 200.
  static absl::StatusOr<std::unique_ptr<Agent>> Start(const std::vector<std::string>& flags,
                                                      const std::string& dir);
  static absl::StatusOr<std::unique_ptr<Agent>> Start(const std::vector<std::string>& flags,
                                                      const std::string& dir,
                                                      const PodConditions& pod);
  int port() const { return port_; }
  Child& process() { return *child_; }
  std::string Log() const { return child_->Log(); }
  absl::StatusOr<HttpResponse> Get(const std::string& path,
                                   absl::Duration timeout = absl::Seconds(10)) const {
    return HttpGet(port_, path, timeout);
  }

 private:
  Agent(int port, std::unique_ptr<Child> c) : port_(port), child_(std::move(c)) {}
  int port_;
  std::unique_ptr<Child> child_;
};

// The value of the /metrics line `name value` of `a` (name with its labels, if any); -1 if
// absent or unreadable.
double Metric(const Agent& a, const std::string& name);

// The port a target printed into its log as a line "port=N", waiting up to 10 s for it; 0 if
// it never came.
int TargetPort(const std::string& log);

// A CPU profile fetched from the agent, written to `path` and summarized by google/pprof.
struct FetchedProfile {
  std::string path;
  PprofSummary summary;
  absl::Time sent, received;
};
absl::StatusOr<FetchedProfile> FetchProfile(int port, int seconds, const std::string& path);

// Samples the target's utime+stime (/proc/PID/stat) with wall-clock timestamps every few
// milliseconds, so the CPU time spent inside a profile's window [time_nanos, +duration_nanos]
// can be interpolated afterwards.
class CpuMonitor {
 public:
  explicit CpuMonitor(pid_t pid);
  ~CpuMonitor();
  // CPU seconds the process used between the two Unix times (ns), linearly interpolated
  // between readings; nullopt if the readings do not cover the interval.
  std::optional<double> CpuSecondsBetween(int64_t from_unix_ns, int64_t to_unix_ns) const;

 private:
  void Loop();
  const pid_t pid_;
  mutable std::mutex mu_;
  std::vector<std::pair<int64_t, double>> readings_;  // (unix ns, cpu seconds)
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// utime+stime of `pid` in seconds, or nullopt if it cannot be read.
std::optional<double> ProcessCpuSeconds(pid_t pid);

// Pids (in our pid namespace) whose comm equals `comm`.
std::vector<pid_t> PidsByComm(const std::string& comm);

// Sends `bytes` on a fresh TCP connection to 127.0.0.1:port and returns the server's first
// response (status line, headers, Content-Length body), or what arrived before the server closed
// the connection or `timeout` passed (empty if it never answered). The connection is not
// half-closed.
absl::StatusOr<std::string> RawExchange(int port, const std::string& bytes,
                                        absl::Duration timeout = absl::Seconds(5));

// First and last line numbers of Go function `name`'s body in `file` ("func name(" to the next
// line that is exactly "}").
std::pair<int, int> GoFuncLines(const std::string& file, const std::string& name);

}  // namespace pprof_sidecar::testing

// Assigns the value of a StatusOr expression to a new variable `lhs`, or fails the test.
#ifndef ASSERT_OK_AND_ASSIGN
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                       \
  auto lhs##_or = (expr);                                     \
  ASSERT_TRUE(lhs##_or.ok()) << lhs##_or.status().ToString(); \
  auto lhs = *std::move(lhs##_or)
#endif

#endif  // PPROF_SIDECAR_TESTS_E2E_E2E_UTIL_H_
