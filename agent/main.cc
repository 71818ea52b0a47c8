// pprof-sidecar: serves Go's /debug/pprof contract for another process in the pod, sampled
// with eBPF. See README.md for the user's view and docs/DESIGN.md for the data path.
#include <arpa/inet.h>
#include <gflags/gflags.h>
#include <linux/perf_event.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/goprofile/contention_source.h"
#include "agent/goprofile/goroutine_source.h"
#include "agent/goprofile/threadcreate_source.h"
#include "agent/goruntime/go_labels.h"
#include "agent/heap/heap_profiler.h"
#include "agent/heap/heap_source.h"
#include "agent/oom/flight_recorder.h"
#include "agent/oom/snapshots_source.h"
#include "agent/profile/cpu_profiler.h"
#include "agent/profile/cpu_source.h"
#include "agent/sampler/cpu_sampler.h"
#include "agent/sampler/malloc_sampler.h"
#include "agent/sampler/oom_victim_watch.h"
#include "agent/server/http_params.h"
#include "agent/server/pprof_server.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/target/target_tracker.h"
#include "agent/unwind/unwind_tables.h"

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
DEFINE_string(probe, "",
              "Probe mode (for the container's exec probes; the agent listens on loopback only): "
              "GET this path (e.g. /healthz) from the agent at --listen_address, print the answer, "
              "exit 0 if it is 200, else 1.");
DEFINE_string(bpf_program, "auto",
              "Which build of the CPU sampling program: 'default', 'compat' (for kernels without "
              "bpf_loop/bpf_find_vma (5.17), bpf_task_pt_regs (5.15) or task storage (5.11)), or "
              "'auto' (probe the kernel).");
DEFINE_int32(max_profile_seconds, 300, "Largest accepted ?seconds= for a CPU profile.");
DEFINE_int32(rediscover_interval_ms, 500,
             "How often the agent checks that the target is alive and re-discovers it.");
DEFINE_int32(symbol_cache_binaries, 64, "Most binaries kept parsed in the symbol cache.");
DEFINE_string(malloc_profiling, "on_request",
              "Non-Go targets' /debug/pprof/heap and /allocs, and any target's native_heap and "
              "native_allocs (Go targets: always on request unless off), from uprobes on the "
              "allocator (malloc "
              "& co): 'on_request' (attached at the first heap/allocs request, detached after "
              "--malloc_idle_detach_seconds without one), 'always' (attached while the target "
              "exists), 'off'.");
DEFINE_bool(malloc_uprobe_sessions, true,
            "Non-Go targets: where the kernel has uprobe sessions (6.13+), probe each allocator "
            "function with one session (the return probed only for sampled calls; no "
            "CAP_SYS_ADMIN needed) instead of an uprobe and a uretprobe through the perf PMU.");
DEFINE_int32(malloc_idle_detach_seconds, 600,
             "--malloc_profiling=on_request: detach the allocator probes after this long without "
             "a heap/allocs request.");
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
DEFINE_int32(max_concurrent_profiles, 64,
             "Profile windows (CPU profiles, heap/allocs with seconds=N) served at once; more "
             "are answered 503. Other requests have their own workers.");
DEFINE_int32(shutdown_timeout_seconds, 5,
             "After SIGTERM/SIGINT: profile windows in progress are cut short and served, and "
             "the agent exits within this many seconds (Kubernetes' default grace period is 30).");
DEFINE_int32(bpf_wakeup_bytes, -1,
             "Wake the sample reader only when this many bytes wait in the ring buffer (it also "
             "polls every 100 ms and before a window ends); 0 = wake at every sample; -1 (and "
             "the most) = a quarter of the ring buffer.");

DEFINE_string(snapshot_dir, "",
              "OOM flight recorder: directory (an emptyDir in the chart) where heap snapshots of "
              "the target are kept as its memory approaches its limit, served at "
              "/debug/pprof/snapshots/. Empty: no recorder.");
DEFINE_string(snapshot_thresholds, "50,70,85,95",
              "Percentages of the target's memory limit at which a snapshot is taken (once per "
              "process each; empty: none).");
DEFINE_int32(snapshot_interval_seconds, 0,
             "Also take a snapshot every this many seconds per process (0: never).");
DEFINE_int32(snapshot_max_count, 32, "Most snapshots kept (the oldest are deleted first).");
DEFINE_int64(snapshot_max_bytes, 32 << 20, "Most bytes of snapshots kept.");
DEFINE_int64(target_memory_limit_bytes, 0,
             "The target container's memory limit (the pod spec fills it from "
             "resources.limits.memory through the downward API), used when its cgroup sets none "
             "that the agent can read. 0: none.");
DEFINE_int32(memory_watch_interval_ms, 200, "How often the target's memory is read.");
DEFINE_int32(snapshot_recent_interval_ms, 1000,
             "Within 10 points of the highest threshold, also read the heap into memory this often "
             "(0: never), "
             "so that an OOM kill that outruns the at-kill capture still leaves a heap from at "
             "most this long before it.");
DEFINE_bool(oom_kill_snapshot, true,
            "Attach the kernel's OOM-victim event (tp_btf/mark_victim) and try one last heap "
            "snapshot when the target is chosen.");
DEFINE_bool(go_contention_rate_write, false,
            "Go targets that never enabled block/mutex profiling: for a /debug/pprof/block or "
            "/mutex request with seconds=N, set the target's rate variable for the window (as "
            "SetBlockProfileRate/SetMutexProfileFraction would) and restore it after. The only "
            "write the agent ever makes to a target; each one is logged. Left set if the agent "
            "is killed during the window.");
DEFINE_int64(go_block_profile_rate_ns, 10000,
             "With --go_contention_rate_write: the block profile rate set for a window (as "
             "runtime.SetBlockProfileRate: one event per this many ns spent blocked; 1: all).");
DEFINE_int64(go_mutex_profile_fraction, 10,
             "With --go_contention_rate_write: the mutex profile fraction set for a window (as "
             "runtime.SetMutexProfileFraction: 1 in this many contention events; 1: all).");

namespace pprof_sidecar {
namespace {

// The OOM flight recorder (--snapshot_dir): its store, recorder and OOM-victim event.
struct Recorder {
  std::unique_ptr<SnapshotStore> store;
  std::unique_ptr<FlightRecorder> recorder;
  std::unique_ptr<OomVictimWatch> oom_watch;
  std::unique_ptr<SnapshotsSource> source;  // /debug/pprof/snapshots/
};

// Opens --snapshot_dir and makes the recorder and its "snapshots" kind (not started: the
// registry is filled first). Exit code 2 on bad flags; an unusable directory is logged and the
// agent goes on without a recorder.
int OpenRecorder(const ProfileRegistry* registry, FlightRecorder::TargetFn target, Recorder* out) {
  if (FLAGS_snapshot_dir.empty()) return 0;
  absl::StatusOr<std::vector<int>> thresholds = ParseThresholds(FLAGS_snapshot_thresholds);
  if (!thresholds.ok() || FLAGS_snapshot_max_count < 1 || FLAGS_snapshot_max_bytes < 1 ||
      FLAGS_snapshot_interval_seconds < 0 || FLAGS_memory_watch_interval_ms < 10 ||
      FLAGS_snapshot_recent_interval_ms < 0 || FLAGS_target_memory_limit_bytes < 0) {
    fprintf(stderr, "pprof-sidecar: bad snapshot flags: %s\n",
            thresholds.ok() ? "counts, sizes and intervals must be positive"
                            : std::string(thresholds.status().message()).c_str());
    return 2;
  }
  auto store =
      SnapshotStore::Open({FLAGS_snapshot_dir, static_cast<size_t>(FLAGS_snapshot_max_count),
                           static_cast<uint64_t>(FLAGS_snapshot_max_bytes)});
  if (!store.ok()) {
    fprintf(stderr, "pprof-sidecar: snapshots disabled: %s\n",
            std::string(store.status().message()).c_str());
    return 0;
  }
  out->store = *std::move(store);
  FlightRecorderOptions o;
  o.policy.percents = *thresholds;
  o.policy.interval = absl::Seconds(FLAGS_snapshot_interval_seconds);
  o.poll_interval = absl::Milliseconds(FLAGS_memory_watch_interval_ms);
  o.recent_interval = absl::Milliseconds(FLAGS_snapshot_recent_interval_ms);
  o.watcher.flag_limit = static_cast<uint64_t>(FLAGS_target_memory_limit_bytes);
  out->recorder =
      std::make_unique<FlightRecorder>(o, out->store.get(), registry, std::move(target));
  out->source = std::make_unique<SnapshotsSource>(out->store.get(), out->recorder.get());
  return 0;
}

// Attaches the OOM-victim event (logged if it cannot be) and starts watching the target.
void StartRecorder(Recorder* r) {
  if (!r->recorder) return;
  if (FLAGS_oom_kill_snapshot) {
    FlightRecorder* rec = r->recorder.get();
    auto w =
        OomVictimWatch::Start([rec](const OomVictim& v) { rec->OnOomVictim(v.pid, v.start_time); });
    if (w.ok()) {
      r->oom_watch = *std::move(w);
      rec->SetOomEventStatus(absl::OkStatus());
    } else {
      rec->SetOomEventStatus(w.status());
      fprintf(stderr, "pprof-sidecar: OOM-victim event unavailable: %s\n",
              std::string(w.status().message()).c_str());
    }
  } else {
    r->recorder->SetOomEventStatus(absl::UnavailableError("--oom_kill_snapshot=false"));
  }
  r->recorder->Start();
  fprintf(stderr, "pprof-sidecar: snapshots in %s (%zu kept)\n", FLAGS_snapshot_dir.c_str(),
          r->store->List().size());
}

std::atomic<PprofServer*> g_server{nullptr};
volatile sig_atomic_t g_stopping = 0;
struct timespec g_stop_requested = {};  // CLOCK_MONOTONIC

void LogCpuReadiness(const absl::Status& prepared, const CpuReadiness& r) {
  if (!prepared.ok()) {
    fprintf(stderr, "pprof-sidecar: CPU profiles unavailable: %s\n",
            std::string(prepared.message()).c_str());
    return;
  }
  fprintf(stderr, "pprof-sidecar: CPU sampling: %s clock%s%s, %s BPF program\n",
          r.sampler.clock.c_str(), r.sampler.tick_attach.empty() ? "" : " at ",
          r.sampler.tick_attach.c_str(), r.sampler.program_variant.c_str());
  if (!r.sampler.tick_unavailable.empty()) {
    fprintf(stderr, "pprof-sidecar: tick clock unavailable: %s\n",
            r.sampler.tick_unavailable.c_str());
  }
  for (const std::string& f : r.sampler.reduced) {
    fprintf(stderr, "pprof-sidecar: kernel lacks %s\n", f.c_str());
  }
}

// Whether the running kernel is older than `major`.`minor` (false when unknown).
bool KernelOlderThan(int major, int minor) {
  struct utsname u;
  int ma = 0, mi = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma < major || (ma == major && mi < minor);
}

// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (newer ones to the memory cgroup): lifts
// it, and says so when it cannot (no CAP_SYS_RESOURCE) and the kernel is one of those.
void RaiseMemlockLimit() {
  struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
  if (setrlimit(RLIMIT_MEMLOCK, &rl) == 0 || !KernelOlderThan(5, 11)) return;
  const int err = errno;
  if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
  fprintf(stderr,
          "pprof-sidecar: RLIMIT_MEMLOCK is %llu KiB and cannot be raised (%s; needs "
          "CAP_SYS_RESOURCE): this kernel (before 5.11) charges BPF maps to it, and the samplers "
          "fail to load if theirs do not fit\n",
          static_cast<unsigned long long>(rl.rlim_cur / 1024), strerror(err));
}

// Debian's kernels (and others with its patch) refuse perf_event_open(2) at
// kernel.perf_event_paranoid >= 3 to anything but CAP_SYS_ADMIN, CAP_PERFMON included; Ubuntu's
// accept CAP_PERFMON. Both samplers need perf events (the CPU sampler's perf clock and its check at
// start, the malloc sampler's uprobes): says why when they are refused that way.
void ExplainPerfEventRefusal() {
  perf_event_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.size = sizeof(attr);
  attr.type = PERF_TYPE_SOFTWARE;
  attr.config = PERF_COUNT_SW_CPU_CLOCK;
  attr.disabled = 1;
  const int fd =
      static_cast<int>(syscall(__NR_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC));
  if (fd >= 0) {
    close(fd);
    return;
  }
  const int err = errno;
  int paranoid = 0;
  FILE* f = fopen("/proc/sys/kernel/perf_event_paranoid", "r");
  if (f == nullptr) return;
  const bool read = fscanf(f, "%d", &paranoid) == 1;
  fclose(f);
  if ((err != EACCES && err != EPERM) || !read || paranoid < 3) return;
  fprintf(stderr,
          "pprof-sidecar: perf_event_open is refused (%s) at kernel.perf_event_paranoid=%d: "
          "kernels with Debian's patch then allow it only with CAP_SYS_ADMIN; set "
          "kernel.perf_event_paranoid=2 on the node, or grant SYS_ADMIN\n",
          strerror(err), paranoid);
}

// Async-signal-safe: the server drains (windows cut short and served); a stuck shutdown is
// ended by SIGALRM.
void HandleSignal(int) {
  if (PprofServer* s = g_server.load()) s->Stop();
  if (!g_stopping) {
    g_stopping = 1;
    clock_gettime(CLOCK_MONOTONIC, &g_stop_requested);
    alarm(static_cast<unsigned>(FLAGS_shutdown_timeout_seconds));
  }
}

void HandleAlarm(int) {
  static const char kMsg[] =
      "pprof-sidecar: shutdown did not finish within --shutdown_timeout_seconds; exiting now\n";
  ssize_t n = write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
  (void)n;
  _exit(1);
}

void InstallSignalHandlers() {
  struct sigaction sa = {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = HandleSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sa.sa_handler = HandleAlarm;
  sigaction(SIGALRM, &sa, nullptr);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, nullptr);
}

// --probe: one GET against a running agent on a numeric loopback address (the agent refuses any
// other unless told). Prints the body; exits 0 on a 200, 1 otherwise (refused, 503, timeout).
int Probe(const HostPort& hp) {
  const std::string what = absl::StrCat("http://", hp.host, ":", hp.port, FLAGS_probe);
  auto fail = [&](const char* why) {
    fprintf(stderr, "pprof-sidecar: probe %s: %s\n", what.c_str(), why);
    return 1;
  };
  struct sockaddr_in6 a6 = {};
  struct sockaddr_in a4 = {};
  const bool v6 = inet_pton(AF_INET6, hp.host.c_str(), &a6.sin6_addr) == 1;
  if (!v6 && inet_pton(AF_INET, hp.host == "localhost" ? "127.0.0.1" : hp.host.c_str(),
                       &a4.sin_addr) != 1) {
    return fail("not a numeric address");
  }
  a6.sin6_family = AF_INET6;
  a6.sin6_port = htons(hp.port);
  a4.sin_family = AF_INET;
  a4.sin_port = htons(hp.port);
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(strerror(errno));
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const int rc = v6 ? connect(fd, reinterpret_cast<sockaddr*>(&a6), sizeof(a6))
                    : connect(fd, reinterpret_cast<sockaddr*>(&a4), sizeof(a4));
  if (rc != 0) {
    const int e = errno;
    close(fd);
    return fail(strerror(e));
  }
  const std::string req = absl::StrCat("GET ", FLAGS_probe, " HTTP/1.1\r\nHost: ", hp.host,
                                       "\r\nConnection: close\r\n\r\n");
  std::string resp;
  bool ok = send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  char buf[4096];
  for (ssize_t n; ok && resp.size() < (1 << 20) && (n = recv(fd, buf, sizeof(buf), 0)) != 0;) {
    if (n < 0)
      ok = false;
    else
      resp.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (!ok) return fail("no complete answer within 5 s");
  const size_t body = resp.find("\r\n\r\n");
  if (resp.compare(0, 9, "HTTP/1.1 ") != 0 || body == std::string::npos) {
    return fail("not an HTTP answer");
  }
  fputs(resp.c_str() + body + 4, stdout);
  return resp.compare(9, 3, "200") == 0 ? 0 : 1;
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
  if (absl::StatusOr<MallocPolicy> p = ParseMallocPolicy(FLAGS_malloc_profiling); !p.ok()) {
    fprintf(stderr, "pprof-sidecar: --malloc_profiling: %s\n",
            std::string(p.status().message()).c_str());
    return 2;
  }
  if (FLAGS_malloc_idle_detach_seconds < 1) {
    fprintf(stderr, "pprof-sidecar: --malloc_idle_detach_seconds must be positive\n");
    return 2;
  }
  if (FLAGS_max_profile_seconds < 1) {
    fprintf(stderr, "pprof-sidecar: --max_profile_seconds must be positive\n");
    return 2;
  }
  if (FLAGS_max_concurrent_profiles < 1 || FLAGS_shutdown_timeout_seconds < 2) {
    fprintf(stderr,
            "pprof-sidecar: --max_concurrent_profiles must be positive and "
            "--shutdown_timeout_seconds at least 2\n");
    return 2;
  }
  auto hp = ParseListenAddress(FLAGS_listen_address);
  if (!hp.ok()) {
    fprintf(stderr, "pprof-sidecar: --listen_address: %s\n",
            std::string(hp.status().message()).c_str());
    return 2;
  }
  if (!FLAGS_probe.empty()) return Probe(*hp);
  if (!IsLoopbackHost(hp->host) && !FLAGS_allow_non_loopback_listen) {
    fprintf(stderr,
            "pprof-sidecar: refusing to listen on non-loopback address %s: profiles expose the "
            "target's code and data; keep the agent on 127.0.0.1 behind kube-rbac-proxy, or pass "
            "--allow_non_loopback_listen\n",
            FLAGS_listen_address.c_str());
    return 2;
  }

  RaiseMemlockLimit();
  ExplainPerfEventRefusal();

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
  if (FLAGS_bpf_program == "default") {
    sampler_opts.variant = BpfCpuSamplerOptions::Variant::kDefault;
  } else if (FLAGS_bpf_program == "compat") {
    sampler_opts.variant = BpfCpuSamplerOptions::Variant::kCompat;
  } else if (FLAGS_bpf_program != "auto") {
    fprintf(stderr, "pprof-sidecar: --bpf_program must be auto, default or compat, not \"%s\"\n",
            FLAGS_bpf_program.c_str());
    return 2;
  }

  ProcessSymbolizer::Options so;
  so.max_binaries = FLAGS_symbol_cache_binaries;
  ProcessSymbolizer symbolizer(so);
  // The unwinding tables of the symbolizer's binaries, shared by the CPU and malloc unwinders.
  UnwindTableCache unwind_tables(so.max_binaries);
  CpuProfiler cpu([sampler_opts] { return NewBpfCpuSampler(sampler_opts); }, &symbolizer,
                  FLAGS_cpu_sampling_hz, &unwind_tables);
  // Go targets' runtimes, read by the heap, allocs, goroutine, threadcreate, block and mutex
  // kinds (one cache of Go binaries); the pprof labels of CPU samples need only the release of
  // the target.
  auto go_binaries = std::make_shared<GoBinaryCache>();
  GoSampleLabeler go_labeler;
  cpu.SetLabeler(&go_labeler);
  // Load and attach the CPU sampler now, so that /healthz tells the truth from the start. Without
  // it the agent still serves what needs no BPF (heap profiles of Go targets) and says why.
  const absl::Status prepared = cpu.Prepare();  // before readiness(): it fills it
  LogCpuReadiness(prepared, cpu.readiness());

  // heap/allocs: Go targets' own heap profile, read from their memory on request; other
  // targets: a malloc sampler, attached per --malloc_profiling.
  HeapProfiler heap(&symbolizer, go_binaries);
  {
    MallocSamplerOptions mopts;
    mopts.sample_bytes = FLAGS_heap_sample_bytes;
    mopts.max_live = static_cast<uint32_t>(FLAGS_heap_max_live);
    mopts.symbolizer = &symbolizer;
    mopts.unwind_tables = &unwind_tables;
    mopts.go_binaries = go_binaries.get();
    mopts.uprobe_sessions = FLAGS_malloc_uprobe_sessions;
    mopts.stack_copy_bytes = static_cast<uint32_t>(std::max(0, FLAGS_user_stack_bytes));
    NativeHeapOptions nopts;
    nopts.policy = *ParseMallocPolicy(FLAGS_malloc_profiling);  // checked above
    if (!FLAGS_snapshot_dir.empty() && nopts.policy == MallocPolicy::kOnRequest) {
      // The flight recorder's snapshots are the live set: it needs every allocation's history.
      nopts.policy = MallocPolicy::kAlways;
      fprintf(stderr,
              "pprof-sidecar: malloc profiling: always (not on_request): --snapshot_dir's heap "
              "snapshots of a non-Go target need its allocations from the start\n");
    }
    nopts.idle_detach = absl::Seconds(FLAGS_malloc_idle_detach_seconds);
    if (absl::Status p = MallocSamplerPrivileges(mopts); !p.ok()) {
      nopts.prerequisite_note = std::string(p.message());
      if (nopts.policy != MallocPolicy::kOff) {
        fprintf(stderr, "pprof-sidecar: malloc profiling: %s\n", nopts.prerequisite_note.c_str());
      }
    }
    heap.EnableNative([mopts](pid_t pid) { return StartMallocSampler(pid, mopts); }, nopts);
  }

  DiscoveryOptions dopts;
  dopts.target_pid = FLAGS_target_pid;
  dopts.target_name = FLAGS_target_name;
  auto pids_of = [](const std::optional<ProcessInfo>& t) {
    return t ? std::vector<uint32_t>{static_cast<uint32_t>(t->pid)} : std::vector<uint32_t>{};
  };
  TargetTracker tracker(dopts, absl::Milliseconds(FLAGS_rediscover_interval_ms),
                        [&cpu, &heap, pids_of](const std::optional<ProcessInfo>& t) {
                          heap.SetTarget(t ? std::optional<pid_t>(t->pid) : std::nullopt);
                          cpu.Warm(pids_of(t));
                        });
  // The CPU sampler filters for a new target before a request can see it.
  tracker.SetBeforePublish([&cpu, pids_of](const std::optional<ProcessInfo>& t) {
    absl::Status st = cpu.SetTargets(pids_of(t));
    if (!st.ok()) {
      fprintf(stderr, "pprof-sidecar: setting target: %s\n", std::string(st.message()).c_str());
    }
  });
  // Allocators mapped after the attach (dlopen) are probed on the tracker's next check.
  tracker.SetOnRecheck([&heap](const std::optional<ProcessInfo>& t) {
    if (t) heap.SetTarget(t->pid);
  });
  tracker.Start();

  ServerOptions sopts;
  sopts.max_profile_seconds = FLAGS_max_profile_seconds;
  sopts.max_concurrent_windows = static_cast<size_t>(FLAGS_max_concurrent_profiles);
  // Responses in flight (profiles cut short) are written until 1.5 s before the hard limit,
  // which leaves time to stop the tracker and detach the probes.
  sopts.http.drain_timeout =
      absl::Seconds(FLAGS_shutdown_timeout_seconds) - absl::Milliseconds(1500);
  TargetView view{[&tracker] { return tracker.current(); },
                  [&tracker] { return tracker.status_message(); }};
  // The profile kinds served at /debug/pprof/<name>; the OOM flight recorder captures through
  // the same registry (heap; goroutine once it is a kind).
  ProfileRegistry registry;
  CpuSource cpu_source(&cpu);
  Recorder recorder;
  if (int rc = OpenRecorder(
          &registry, [&tracker] { return tracker.current(); }, &recorder)) {
    return rc;
  }
  absl::Status reg = registry.AddUnowned(&cpu_source);
  if (reg.ok()) reg = AddHeapSources(&heap, &registry);
  if (reg.ok() && recorder.source) reg = registry.AddUnowned(recorder.source.get());
  // Go targets' goroutine profile, read from their runtime (agent/goprofile).
  if (reg.ok()) reg = registry.Add(std::make_unique<GoroutineSource>(go_binaries, &symbolizer));
  if (reg.ok()) reg = registry.Add(std::make_unique<ThreadCreateSource>(go_binaries, &symbolizer));
  ContentionRateWrite rate_write;
  rate_write.enabled = FLAGS_go_contention_rate_write;
  rate_write.block_rate_ns = FLAGS_go_block_profile_rate_ns;
  rate_write.mutex_fraction = FLAGS_go_mutex_profile_fraction;
  if (reg.ok()) {
    reg = registry.Add(std::make_unique<ContentionSource>(ContentionKind::kBlock, go_binaries,
                                                          &symbolizer, rate_write));
  }
  if (reg.ok()) {
    reg = registry.Add(std::make_unique<ContentionSource>(ContentionKind::kMutex, go_binaries,
                                                          &symbolizer, rate_write));
  }
  if (!reg.ok()) {
    fprintf(stderr, "pprof-sidecar: %s\n", std::string(reg.message()).c_str());
    return 1;
  }
  registry.NotServed("trace",
                     "an execution trace needs the runtime's tracer, which only the "
                     "target itself can start");
  PprofServer server(&registry, &symbolizer, view, sopts);
  StartRecorder(&recorder);
  if (absl::Status st = server.Bind(hp->host, hp->port); !st.ok()) {
    fprintf(stderr, "pprof-sidecar: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  g_server.store(&server);
  InstallSignalHandlers();
  fprintf(stderr, "pprof-sidecar: serving http://%s:%d/debug/pprof/ (cpu %d Hz)\n",
          hp->host.c_str(), server.port(), FLAGS_cpu_sampling_hz);
  absl::Status st;
  std::atomic<bool> served{false};
  std::thread serve([&] {
    st = server.Serve();
    served.store(true);
  });
  // Once stopping, the malloc probes are detached while the profile windows still open are cut
  // short and written (each detach waits for a kernel grace period: ~0.1 s a probe, more on a
  // loaded node), rather than after them.
  while (!g_stopping && !served.load()) absl::SleepFor(absl::Milliseconds(20));
  if (recorder.recorder) recorder.recorder->Stop();
  recorder.oom_watch.reset();
  tracker.Stop();  // no more attaches
  heap.SetTarget(std::nullopt);
  serve.join();
  g_server.store(nullptr);
  if (!st.ok()) {
    fprintf(stderr, "pprof-sidecar: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  if (g_stopping) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    const double ms = (now.tv_sec - g_stop_requested.tv_sec) * 1e3 +
                      (now.tv_nsec - g_stop_requested.tv_nsec) / 1e6;
    fprintf(stderr, "pprof-sidecar: stopped %.0f ms after the signal (probes detach next)\n", ms);
  } else {
    fprintf(stderr, "pprof-sidecar: stopped\n");
  }
  return 0;
}

}  // namespace
}  // namespace pprof_sidecar

int main(int argc, char** argv) {
  // Profile windows are filled by the sampler's reader thread and built on HTTP worker threads;
  // with one malloc arena per thread each of them would keep its own high-water mark of sample
  // buffers (~10 MB each). Two shared arenas keep the agent's RSS bounded by one window's worth.
  mallopt(M_ARENA_MAX, 2);
  // Blocks of 256 KiB and more (libbpf's copy of the kernel's BTF, decompressed debug sections,
  // sample windows) get their own mappings, returned to the system when freed. glibc's default
  // threshold grows to the largest block freed so far (up to 32 MiB), after which such
  // transient blocks land in the heap and keep the agent's RSS at its high-water mark.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  gflags::SetUsageMessage("eBPF profiler serving Go's /debug/pprof for another process");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pprof_sidecar::Run();
}
