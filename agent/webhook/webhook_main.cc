// pprof-sidecar-webhook: the mutating admission webhook that injects the pprof-sidecar agent and
// kube-rbac-proxy into pods annotated pprof-sidecar.io/inject: "true". See docs/KUBERNETES.md.
#include <gflags/gflags.h>
#include <signal.h>

#include <cstdio>

#include "absl/strings/numbers.h"
#include "agent/webhook/injector.h"
#include "agent/webhook/webhook_server.h"

DEFINE_string(listen_address, "0.0.0.0:8443", "HOST:PORT of the HTTPS endpoint (/mutate).");
DEFINE_string(tls_cert_file, "/tls/tls.crt", "PEM certificate (chain) served; re-read on change.");
DEFINE_string(tls_key_file, "/tls/tls.key", "PEM private key of --tls_cert_file.");
DEFINE_string(agent_image, "pprof-sidecar:latest", "Image of the injected agent container.");
DEFINE_string(agent_image_pull_policy, "IfNotPresent", "imagePullPolicy of the agent container.");
DEFINE_int32(agent_port, 6060, "Loopback port the agent listens on (kube-rbac-proxy upstream).");
DEFINE_int32(cpu_sampling_hz, 100, "--cpu_sampling_hz of the injected agent.");
DEFINE_bool(privileged, false,
            "Make the agent container privileged (only for runtimes whose seccomp profile blocks "
            "bpf(2) despite CAP_BPF).");
DEFINE_bool(sys_resource, false, "Add CAP_SYS_RESOURCE (kernels before 5.11).");
DEFINE_bool(kernel_symbols, true,
            "Add CAP_SYSLOG, without which kernel frames are shown as [kernel] (/proc/kallsyms "
            "hides kernel addresses).");
DEFINE_bool(native_heap, false,
            "Add CAP_SYS_ADMIN, which malloc uprobes (heap/allocs profiles of non-Go targets) "
            "need on kernels with the 2025 uprobe fix.");
DEFINE_bool(readiness_gate, false,
            "Give the agent a readiness probe on /healthz (the pod is not Ready while the agent "
            "cannot take CPU profiles).");
DEFINE_string(agent_cpu_request, "10m", "CPU request of the agent container.");
DEFINE_string(agent_memory_request, "64Mi", "Memory request of the agent container.");
DEFINE_string(agent_memory_limit, "256Mi", "Memory limit of the agent container.");
DEFINE_string(snapshot_size_limit, "64Mi",
              "sizeLimit of the emptyDir the injected agent keeps OOM snapshots in (its "
              "--snapshot_dir); empty: no OOM flight recorder.");
DEFINE_string(proxy_image, "quay.io/brancz/kube-rbac-proxy:v0.18.1",
              "Image of the injected kube-rbac-proxy container (pin a tag).");
DEFINE_int32(proxy_port, 8443, "HTTPS port kube-rbac-proxy exposes on the pod.");

namespace pprof_sidecar {
namespace {

WebhookServer* g_server = nullptr;
void HandleSignal(int) {
  if (g_server) g_server->Stop();
}

int Run() {
  size_t colon = FLAGS_listen_address.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(FLAGS_listen_address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    fprintf(stderr, "pprof-sidecar-webhook: --listen_address must be HOST:PORT\n");
    return 2;
  }
  for (int p : {FLAGS_agent_port, FLAGS_proxy_port}) {
    if (p < 1 || p > 65535) {
      fprintf(stderr, "pprof-sidecar-webhook: port %d out of range\n", p);
      return 2;
    }
  }
  InjectorConfig cfg;
  cfg.agent_image = FLAGS_agent_image;
  cfg.agent_image_pull_policy = FLAGS_agent_image_pull_policy;
  cfg.agent_port = FLAGS_agent_port;
  cfg.cpu_sampling_hz = FLAGS_cpu_sampling_hz;
  cfg.privileged = FLAGS_privileged;
  cfg.sys_resource = FLAGS_sys_resource;
  cfg.kernel_symbols = FLAGS_kernel_symbols;
  cfg.native_heap = FLAGS_native_heap;
  cfg.readiness_gate = FLAGS_readiness_gate;
  cfg.agent_cpu_request = FLAGS_agent_cpu_request;
  cfg.agent_memory_request = FLAGS_agent_memory_request;
  cfg.agent_memory_limit = FLAGS_agent_memory_limit;
  cfg.snapshot_size_limit = FLAGS_snapshot_size_limit;
  cfg.proxy_image = FLAGS_proxy_image;
  cfg.proxy_port = FLAGS_proxy_port;

  auto server = WebhookServer::Create(FLAGS_tls_cert_file, FLAGS_tls_key_file, cfg);
  if (!server.ok()) {
    fprintf(stderr, "pprof-sidecar-webhook: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::string host = FLAGS_listen_address.substr(0, colon);
  if (absl::Status st = (*server)->Bind(host, port); !st.ok()) {
    fprintf(stderr, "pprof-sidecar-webhook: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  g_server = server->get();
  signal(SIGTERM, HandleSignal);
  signal(SIGINT, HandleSignal);
  signal(SIGPIPE, SIG_IGN);
  fprintf(stderr, "pprof-sidecar-webhook: serving https://%s:%d/mutate (agent %s, proxy %s)\n",
          host.c_str(), (*server)->port(), cfg.agent_image.c_str(), cfg.proxy_image.c_str());
  absl::Status st = (*server)->Serve();
  g_server = nullptr;
  if (!st.ok()) {
    fprintf(stderr, "pprof-sidecar-webhook: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace pprof_sidecar

int main(int argc, char** argv) {
  gflags::SetUsageMessage("mutating admission webhook injecting the pprof-sidecar agent");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pprof_sidecar::Run();
}
