// Sidecar injection for the pprof-sidecar mutating admission webhook.
//
// Contract: an AdmissionReview (admission.k8s.io/v1) for a Pod comes in; an AdmissionReview with
// the same request uid goes out, always allowed, carrying a base64 JSONPatch (patchType
// "JSONPatch") when the pod opts in with the annotation kInjectAnnotation = "true" and does not
// already carry the sidecar. The patch sets spec.shareProcessNamespace, appends the agent
// container (listening on 127.0.0.1 only, least-privilege capabilities) and the kube-rbac-proxy
// container (the only port the pod exposes for profiles), and marks the pod with
// kStatusAnnotation so a second pass leaves it alone. A pod that opted in but cannot be injected
// (bad annotation value, unknown target container) is allowed unchanged with a warning.
#ifndef PPROF_SIDECAR_AGENT_WEBHOOK_INJECTOR_H_
#define PPROF_SIDECAR_AGENT_WEBHOOK_INJECTOR_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar {

// Opt-in: "true" injects; absent or "false" does not.
inline constexpr char kInjectAnnotation[] = "pprof-sidecar.io/inject";
// Optional: name of the container whose main process is the profiling target.
inline constexpr char kTargetContainerAnnotation[] = "pprof-sidecar.io/target-container";
// Optional: regex (full match on comm or executable basename) passed as the agent's --target_name;
// wins over the target container's command.
inline constexpr char kTargetNameAnnotation[] = "pprof-sidecar.io/target-name";
// Set by the webhook on injected pods ("injected").
inline constexpr char kStatusAnnotation[] = "pprof-sidecar.io/status";

inline constexpr char kAgentContainerName[] = "pprof-sidecar";
// The agent's path in the image (its entrypoint).
inline constexpr char kAgentBinary[] = "/usr/local/bin/pprof-sidecar";
inline constexpr char kProxyContainerName[] = "kube-rbac-proxy";

struct InjectorConfig {
  std::string agent_image = "pprof-sidecar:latest";
  std::string agent_image_pull_policy = "IfNotPresent";
  int agent_port = 6060;  // loopback port of the agent, the proxy's upstream
  int cpu_sampling_hz = 100;
  // Opt-in for runtimes whose seccomp profile blocks bpf(2)/perf_event_open(2) even with
  // CAP_BPF/CAP_PERFMON: the agent container becomes privileged.
  bool privileged = false;
  // Adds CAP_SYS_RESOURCE (kernels < 5.11 charge BPF maps to RLIMIT_MEMLOCK).
  bool sys_resource = false;
  // Adds CAP_SYSLOG: /proc/kallsyms shows kernel addresses only with it (unless
  // kernel.kptr_restrict=0 and perf_event_paranoid<=1); without it kernel frames are "[kernel]".
  bool kernel_symbols = true;
  // Adds CAP_SYS_ADMIN: heap/allocs profiles of non-Go targets (malloc uprobes) need it on
  // kernels with the 2025 uprobe fix and without uprobe sessions (< 6.13); without it those
  // requests answer 503 naming it.
  bool native_heap = false;
  // A readiness probe on the agent's /healthz. A container's readiness is its pod's: off by
  // default, so that a node where CPU profiles cannot be taken never takes the app out of its
  // Services. The liveness probe (/livez: the agent answers) is always set.
  bool readiness_gate = false;
  std::string agent_cpu_request = "10m";
  std::string agent_memory_request = "64Mi";
  std::string agent_memory_limit = "256Mi";
  // OOM flight recorder: an emptyDir of this size (survives the agent's and the target's
  // restarts) mounted at kSnapshotDir for --snapshot_dir; empty: no recorder. The target
  // container's resources.limits.memory is passed as --target_memory_limit_bytes (downward API)
  // when the target container is known.
  std::string snapshot_size_limit = "64Mi";

  std::string proxy_image = "quay.io/brancz/kube-rbac-proxy:v0.18.1";
  int proxy_port = 8443;
  std::string proxy_cpu_request = "5m";
  std::string proxy_memory_request = "32Mi";
  std::string proxy_memory_limit = "128Mi";
};

// Handles one AdmissionReview request body. Errors (InvalidArgument) are for bodies that are not
// an AdmissionReview v1 request at all (not JSON, no request.uid): the caller answers HTTP 400.
// Everything else yields a response AdmissionReview (serialized JSON).
absl::StatusOr<std::string> ReviewAdmission(absl::string_view body, const InjectorConfig& config);

// The JSONPatch operations (a JSON array, serialized) that inject the sidecar into `pod` (a Pod
// object as JSON), or "" when the pod is left alone; `warnings` receives the reasons a pod that
// opted in was not injected. InvalidArgument when `pod` is not a Pod object.
absl::StatusOr<std::string> InjectionPatch(absl::string_view pod_json, const InjectorConfig& config,
                                           std::vector<std::string>* warnings);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_WEBHOOK_INJECTOR_H_
