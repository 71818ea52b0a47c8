// One profile kind served at /debug/pprof/<name>: the contract between the HTTP layer and the
// rooms that produce profiles (CPU, heap/allocs, goroutine, threadcreate, block, mutex,
// snapshots). The HTTP layer is generic over it (profile_registry.h): it parses and validates
// the parameters a kind declares, picks the worker lane, maps the Status a source returns to an
// HTTP code, writes the headers Go's net/http/pprof writes, and lists the kind on the index page.
// A source never sees HTTP. Pure: no BPF, no sampler, testable without privileges.
#ifndef PPROF_SIDECAR_AGENT_REGISTRY_PROFILE_SOURCE_H_
#define PPROF_SIDECAR_AGENT_REGISTRY_PROFILE_SOURCE_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/target/target_discovery.h"

namespace pprof_sidecar {

// What a kind accepts and how it is listed. Parameters not declared here are ignored, as Go
// ignores unknown query parameters.
struct ProfileKindInfo {
  std::string name;         // path segment: /debug/pprof/<name>
  std::string description;  // the index page's text, as Go's (pprof.Lookup's profileDescriptions)
  // `seconds`: kNone ignores it; kWindow always holds a window (CPU: default_seconds when
  // absent); kDelta is a snapshot without it and a delta over N s with it (heap, allocs, block,
  // mutex, goroutine as in Go). Present, it must be a positive integer <= the server's maximum.
  enum class Seconds { kNone, kWindow, kDelta };
  Seconds seconds = Seconds::kNone;
  int default_seconds = 30;  // kWindow only
  // Accepted values of `debug` (absent: 0). Others: 400 naming the accepted ones. Empty: the
  // parameter is ignored (Go's CPU profile handler).
  std::vector<int> debug_levels = {0};
  // Content-Disposition filename for debug=0 (Go: the profile's name; "-delta" is appended for a
  // delta). Empty: no attachment header.
  std::string filename;
  // Needs a current target (else 503 "no target process: <why>"). The snapshot archive does not.
  bool needs_target = true;
  // Serves /debug/pprof/<name>/<rest> too (ProfileRequest::subpath); listed with a trailing '/'.
  bool subpaths = false;
  // The agent is not ready (/healthz 503) while this kind is unavailable (CPU profiles).
  bool gates_readiness = false;
  // Prefix of error messages: "Could not enable CPU profiling", "Could not get heap profile".
  std::string error_prefix;
};

struct ProfileRequest {
  std::optional<ProcessInfo> target;  // set when info().needs_target
  int debug = 0;
  absl::Duration seconds = absl::ZeroDuration();  // zero: no window/delta requested
  std::string subpath;                            // ProfileKindInfo::subpaths only
  std::string accept;                             // the request's Accept header, if any
  // The first value of every query parameter, for kind-specific ones (gc=1, ...).
  std::map<std::string, std::string> params;
  std::vector<std::string> comments;  // to put into the profile (who/what the target is)
  // Polled during a window: the client left (drop the work: return Cancelled) ...
  std::function<bool()> cancelled = [] { return false; };
  // ... or the agent is stopping (return what there is, saying why in the comments).
  std::function<bool()> cut_short = [] { return false; };
  std::string cut_short_reason = "the agent is shutting down";
};

struct ProfileResponse {
  std::string body;
  // Empty: application/octet-stream for debug=0, text/plain; charset=utf-8 otherwise.
  std::string content_type;
};

// Prometheus text exposition helpers for a source's own counters (/metrics reads every source).
class MetricsWriter {
 public:
  void Counter(const std::string& name, const std::string& help, double v);
  void Gauge(const std::string& name, const std::string& help, double v);
  // One family with a label: {label="key"} value per entry.
  void CounterFamily(const std::string& name, const std::string& help, const std::string& label,
                     const std::vector<std::pair<std::string, double>>& values);
  void GaugeFamily(const std::string& name, const std::string& help, const std::string& label,
                   const std::vector<std::pair<std::string, double>>& values);
  // A gauge with several labels: name{k1="v1",...} v.
  void Info(const std::string& name, const std::string& help,
            const std::vector<std::pair<std::string, std::string>>& labels, double v);
  const std::string& text() const { return out_; }

 private:
  void Family(const std::string& name, const std::string& help, const char* type,
              const std::string& label, const std::vector<std::pair<std::string, double>>& values);
  std::string out_;
};

class ProfileSource {
 public:
  virtual ~ProfileSource() = default;
  virtual const ProfileKindInfo& info() const = 0;
  // The profile (or page) for `req`. Status codes map to HTTP: InvalidArgument 400,
  // PermissionDenied 403, NotFound (of a subpath) 404, Unimplemented 501, Unavailable /
  // FailedPrecondition / Aborted 503 (the target's state, e.g. it exited), Cancelled: the client
  // is gone (nothing is written), anything else 500. The message is the whole explanation.
  virtual absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) = 0;
  // Why this kind cannot be served for `target` now (OK: it can). /healthz lists the kinds that
  // cannot, with this message; the index page marks them.
  virtual absl::Status Availability(const std::optional<ProcessInfo>& target) const {
    return absl::OkStatus();
  }
  // Extra /healthz lines about this kind (each ending in '\n'); empty: none.
  virtual std::string HealthLines(const std::optional<ProcessInfo>& target) const { return ""; }
  // This kind's counters and gauges (`target`: the current target, for per-target gauges).
  virtual void WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const {}
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_REGISTRY_PROFILE_SOURCE_H_
