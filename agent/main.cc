// pprof-sidecar: serves Go's /debug/pprof contract for another process in the pod, sampled
// with eBPF. See README.md for the user's view and docs/DESIGN.md for the data path.
#include <gflags/gflags.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/heap/heap_profiler.h"
#include "agent/heap/malloc_sampler.h"
#include "agent/profile/cpu_profiler.h"
#include "agent/sampler/cpu_sampler.h"
#include "agent/server/pprof_server.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/target/target_tracker.h"

DEFINE_int32(target_pid, 0,
             "Pid (in the agent's pid namespace) of the process to profile. "
             "Fixed: does not follow a restart of the target (use --target_name for that).");
DEFINE_string(target_name, "",
              "Extended regex matched against the comm and the executable "
              "basename of candidate processes; the largest (RSS) match is the target.");
DEFINE_string(listen_address, "127.0.0.1:6060", "HOST:PORT to serve /debug/pprof on.");
DEFINE_bool(allow_non_loopback_listen, false,
            "Allow --listen_address on a non-loopback address (profiles expose code and data "
            "layout: keep them behind kube-rbac-proxy).");
DEFINE_int32(cpu_sampling_hz, 100, "CPU sampling frequency per CPU (Go's default is 100).");
DEFINE_string(cpu_sampling_clock, "auto",
              "What takes CPU samples: 'tick' (the scheduler tick samples each target thread "
              "once per 1/hz s of its CPU time, like Go's own profiler; no interrupt of its own), "
              "'perf' (a software cpu-clock perf event per CPU: any rate, one hrtimer interrupt "
              "per sample), or 'auto' (tick up to 100 Hz when the kernel allows it, else perf).");
DEFINE_int32(max_profile_seconds, 300, "Largest accepted ?seconds= for a CPU profile.");
DEFINE_int32(rediscover_interval_ms, 500,
             "How often the agent checks that the target is alive and re-discovers it.");
DEFINE_int32(symbol_cache_binaries, 64, "Most binaries kept parsed in the symbol cache.");
DEFINE_bool(malloc_profiling, true,
            "Non-Go targets: attach uprobes to the allocator (malloc & co) while the target "
            "exists, for /debug/pprof/heap and /debug/pprof/allocs.");
DEFINE_int64(heap_sample_bytes, 512 * 1024,
             "Non-Go targets: mean bytes allocated between malloc samples (1: every allocation).");
DEFINE_int32(heap_max_live, 1 << 20,
             "Non-Go targets: most sampled live allocations tracked for inuse_* (overflow is "
             "counted in /metrics and the profile's comments).");
DEFINE_int32(user_stack_bytes, 8192,
             "Most bytes of user stack copied per sample for unwinding without frame pointers "
             "(multiple of 8, 0..16384; 0 = frame pointers only).");
DEFINE_bool(bpf_bound_stack_copy, true,
            "Copy the user stack only up to its end (the goroutine's stack end for Go, else the "
            "end of the stack's mapping) instead of always --user_stack_bytes.");
DEFINE_bool(bpf_user_fp_walk, true,
            "Also walk the user stack's frame pointers in the kernel (completes stacks across "
            "Go stack switches).");
DEFINE_int32(bpf_wakeup_bytes, -1,
             "Wake the sample reader only when this many bytes wait in the ring buffer (it also "
             "polls every 100 ms and before a window ends); 0 = wake at every sample; -1 (and "
             "the most) = a quarter of the ring buffer.");

namespace pprof_sidecar {
namespace {

PprofServer* g_server = nullptr;

void HandleSignal(int) {
  if (g_server) g_server->Stop();
}

int Run() {
  if (FLAGS_cpu_sampling_hz < 1 || FLAGS_cpu_sampling_hz > 10000) {
    fprintf(stderr, "pprof-sidecar: --cpu_sampling_hz=%d out of range [1, 10000]\n",
            FLAGS_cpu_sampling_hz);
    return 2;
  }
  if (FLAGS_heap_sample_bytes < 1 || FLAGS_heap_max_live < 1) {
    fprintf(stderr, "pprof-sidecar: --heap_sample_bytes and --heap_max_live must be positive\n");
    return 2;
  }
  if (FLAGS_max_profile_seconds < 1) {
    fprintf(stderr, "pprof-sidecar: --max_profile_seconds must be positive\n");
    return 2;
  }
  auto hp = ParseListenAddress(FLAGS_listen_address);
  if (!hp.ok()) {
    fprintf(stderr, "pprof-sidecar: --listen_address: %s\n",
            std::string(hp.status().message()).c_str());
    return 2;
  }
  if (!IsLoopbackHost(hp->host) && !FLAGS_allow_non_loopback_listen) {
    fprintf(stderr,
            "pprof-sidecar: refusing to listen on non-loopback address %s: profiles expose the "
            "target's code and data; keep the agent on 127.0.0.1 behind kube-rbac-proxy, or pass "
            "--allow_non_loopback_listen\n",
            FLAGS_listen_address.c_str());
    return 2;
  }

  // Older kernels account BPF maps against RLIMIT_MEMLOCK; newer ones use memcg. Best effort.
  struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
  setrlimit(RLIMIT_MEMLOCK, &rl);

  BpfCpuSamplerOptions sampler_opts;
  sampler_opts.user_stack_bytes = static_cast<uint32_t>(std::max(0, FLAGS_user_stack_bytes));
  sampler_opts.bound_copy_go = FLAGS_bpf_bound_stack_copy;
  sampler_opts.bound_copy_vma = FLAGS_bpf_bound_stack_copy;
  sampler_opts.user_frame_pointer_walk = FLAGS_bpf_user_fp_walk;
  sampler_opts.wakeup_bytes =
      FLAGS_bpf_wakeup_bytes < 0 ? UINT32_MAX : static_cast<uint32_t>(FLAGS_bpf_wakeup_bytes);
  sampler_opts.expected_hz = FLAGS_cpu_sampling_hz;
  if (FLAGS_cpu_sampling_clock == "tick") {
    sampler_opts.clock = BpfCpuSamplerOptions::Clock::kTick;
  } else if (FLAGS_cpu_sampling_clock == "perf") {
    sampler_opts.clock = BpfCpuSamplerOptions::Clock::kPerfCpuClock;
  } else if (FLAGS_cpu_sampling_clock != "auto") {
    fprintf(stderr, "pprof-sidecar: --cpu_sampling_clock must be auto, tick or perf, not \"%s\"\n",
            FLAGS_cpu_sampling_clock.c_str());
    return 2;
  }
  // Load the BPF program once at startup so missing privileges are reported immediately.
  {
    auto probe = NewBpfCpuSampler(sampler_opts);
    if (!probe.ok()) {
      fprintf(stderr, "pprof-sidecar: cannot load the BPF CPU sampler: %s\n",
              std::string(probe.status().message()).c_str());
      return 1;
    }
  }

  ProcessSymbolizer::Options so;
  so.max_binaries = FLAGS_symbol_cache_binaries;
  ProcessSymbolizer symbolizer(so);
  CpuProfiler cpu([sampler_opts] { return NewBpfCpuSampler(sampler_opts); }, &symbolizer,
                  FLAGS_cpu_sampling_hz);

  // heap/allocs: Go targets' own heap profile, read from their memory on request; other
  // targets: a malloc sampler attached while the target exists (inuse needs its history).
  HeapProfiler heap(&symbolizer);
  if (FLAGS_malloc_profiling) {
    MallocSamplerOptions mopts;
    mopts.sample_bytes = FLAGS_heap_sample_bytes;
    mopts.max_live = static_cast<uint32_t>(FLAGS_heap_max_live);
    heap.EnableNative([mopts](pid_t pid) { return StartMallocSampler(pid, mopts); });
  }

  DiscoveryOptions dopts;
  dopts.target_pid = FLAGS_target_pid;
  dopts.target_name = FLAGS_target_name;
  TargetTracker tracker(dopts, absl::Milliseconds(FLAGS_rediscover_interval_ms),
                        [&cpu, &heap](const std::optional<ProcessInfo>& t) {
                          std::vector<uint32_t> pids;
                          if (t) pids.push_back(static_cast<uint32_t>(t->pid));
                          heap.SetTarget(t ? std::optional<pid_t>(t->pid) : std::nullopt);
                          absl::Status st = cpu.SetTargets(pids);
                          if (!st.ok()) {
                            fprintf(stderr, "pprof-sidecar: setting target: %s\n",
                                    std::string(st.message()).c_str());
                          }
                        });
  // Allocators mapped after the attach (dlopen) are probed on the tracker's next check.
  tracker.SetOnRecheck([&heap](const std::optional<ProcessInfo>& t) {
    if (t) heap.SetTarget(t->pid);
  });
  tracker.Start();

  ServerOptions sopts;
  sopts.max_profile_seconds = FLAGS_max_profile_seconds;
  TargetView view{[&tracker] { return tracker.current(); },
                  [&tracker] { return tracker.status_message(); }};
  PprofServer server(&cpu, &symbolizer, view, sopts);
  server.SetHeapProfiler(&heap);
  if (absl::Status st = server.Bind(hp->host, hp->port); !st.ok()) {
    fprintf(stderr, "pprof-sidecar: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  g_server = &server;
  signal(SIGTERM, HandleSignal);
  signal(SIGINT, HandleSignal);
  signal(SIGPIPE, SIG_IGN);
  fprintf(stderr, "pprof-sidecar: serving http://%s:%d/debug/pprof/ (cpu %d Hz)\n",
          hp->host.c_str(), server.port(), FLAGS_cpu_sampling_hz);
  absl::Status st = server.Serve();
  g_server = nullptr;
  tracker.Stop();
  if (!st.ok()) {
    fprintf(stderr, "pprof-sidecar: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  fprintf(stderr, "pprof-sidecar: stopped\n");
  return 0;
}

}  // namespace
}  // namespace pprof_sidecar

int main(int argc, char** argv) {
  // Profile windows are filled by the sampler's reader thread and built on HTTP worker threads;
  // with one malloc arena per thread each of them would keep its own high-water mark of sample
  // buffers (~10 MB each). Two shared arenas keep the agent's RSS bounded by one window's worth.
  mallopt(M_ARENA_MAX, 2);
  gflags::SetUsageMessage("eBPF profiler serving Go's /debug/pprof for another process");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pprof_sidecar::Run();
}
