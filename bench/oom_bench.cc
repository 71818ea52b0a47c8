// OOM flight recorder costs and outcomes (issue 16). Run as root by bench/oom_bench.sh:
//   oom_bench GO_LEAK_BINARY C_LEAK_BINARY [KILLS]
// 1. The watcher between snapshots: the recorder's thread alone in this process for 20 s at the
//    default 200 ms interval, on a target in a memory cgroup; CPU of this process / wall time.
// 2. A Go heap snapshot vs a /debug/pprof/heap request: the registry's heap source's Collect (the
//    request's work besides HTTP) and FlightRecorder::Capture (the same collect, plus the atomic
//    write with fsync), alternated on one target; thread CPU and wall time.
// 3. The at-kill snapshot: KILLS real OOM kills each of the Go and the C target (64 MiB cgroup,
//    leaking 32 MiB/s), with the OOM-victim event attached; how many at-kill snapshots were saved.
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/heap/heap_profiler.h"
#include "agent/heap/heap_source.h"
#include "agent/oom/flight_recorder.h"
#include "agent/sampler/malloc_sampler.h"
#include "agent/sampler/oom_victim_watch.h"
#include "agent/symbolize/process_symbolizer.h"
#include "tests/testutil/memory_cgroup.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using testing::MemoryCgroup;

// CPU time from the scheduler's own clock (getrusage is sampled at ticks here: too coarse).
double CpuSeconds(int who) {
  struct timespec ts;
  clock_gettime(who == RUSAGE_THREAD ? CLOCK_THREAD_CPUTIME_ID : CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

pid_t Spawn(const std::vector<std::string>& argv) {
  std::vector<char*> a;
  for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  fflush(stdout);  // else the child's freopen writes our buffered lines again
  const pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stdout);
    execv(a[0], a.data());
    _exit(127);
  }
  return pid;
}

// Waits until `pid` runs `comm` (the wrapper has exec'ed).
std::optional<ProcessInfo> WaitExec(pid_t pid, const std::string& comm) {
  for (int i = 0; i < 400; ++i) {
    auto p = ReadProcessInfo(pid);
    if (p.ok() && p->comm == comm) return *p;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return std::nullopt;
}

void WatcherCost(const std::string& dir) {
  auto cg = MemoryCgroup::Create(absl::StrCat("pprof_oom_bench_", getpid()), 256 << 20);
  if (!cg.ok()) return;
  const pid_t pid = Spawn((*cg)->Wrap({"/bin/sleep", "60"}));
  auto t = WaitExec(pid, "sleep");
  MemoryWatcher w({});
  const int n = 20000;
  const double c0 = CpuSeconds(RUSAGE_SELF);
  const absl::Time w0 = absl::Now();
  for (int i = 0; i < n; ++i) w.Read(pid, t->start_time).IgnoreError();
  printf("watcher: one reading (statm + usage + limit) %.1f us CPU, %.1f us wall (%d readings)\n",
         (CpuSeconds(RUSAGE_SELF) - c0) / n * 1e6, absl::ToDoubleMicroseconds(absl::Now() - w0) / n,
         n);
  auto store = SnapshotStore::Open({dir + "/idle", 8, 1 << 20});
  ProfileRegistry reg;
  FlightRecorder rec({}, store->get(), &reg, [&] { return t; });
  const double c1 = CpuSeconds(RUSAGE_SELF);
  const absl::Time w1 = absl::Now();
  rec.Start();
  absl::SleepFor(absl::Seconds(20));
  rec.Stop();
  const double cpu = CpuSeconds(RUSAGE_SELF) - c1, wall = absl::ToDoubleSeconds(absl::Now() - w1);
  printf(
      "watcher: recorder thread at the default 200 ms for %.1f s: %.4f %% of a core (%llu polls)\n",
      wall, 100 * cpu / wall, static_cast<unsigned long long>(rec.stats().polls));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

void SnapshotVsRequest(const std::string& go_bin, const std::string& dir) {
  const pid_t pid = Spawn({go_bin, "2"});  // leaks 2 MiB/s, no limit
  auto t = WaitExec(pid, "oom_go_leak");
  absl::SleepFor(absl::Seconds(3));  // a few GCs: buckets published
  ProcessSymbolizer sym{ProcessSymbolizer::Options{}};
  HeapProfiler heap(&sym);
  ProfileRegistry reg;
  AddHeapSources(&heap, &reg).IgnoreError();
  auto store = SnapshotStore::Open({dir + "/cost", 8, 64 << 20});
  FlightRecorder rec({}, store->get(), &reg, [&] { return t; });
  MemoryReading r;
  heap.Collect(pid, {}).IgnoreError();  // warm: symbols, runtime variables located
  const int n = 40;
  double req_cpu = 0, req_wall = 0, snap_cpu = 0, snap_wall = 0;
  size_t bytes = 0;
  for (int i = 0; i < n; ++i) {
    double c = CpuSeconds(RUSAGE_THREAD);
    absl::Time w = absl::Now();
    ProfileRequest pr;
    pr.target = t;
    auto b = reg.Lookup("heap")->Collect(pr);
    req_cpu += CpuSeconds(RUSAGE_THREAD) - c;
    req_wall += absl::ToDoubleSeconds(absl::Now() - w);
    bytes = b.ok() ? b->body.size() : 0;
    c = CpuSeconds(RUSAGE_THREAD);
    w = absl::Now();
    rec.Capture(*t, "interval", r).IgnoreError();
    snap_cpu += CpuSeconds(RUSAGE_THREAD) - c;
    snap_wall += absl::ToDoubleSeconds(absl::Now() - w);
  }
  // The store's part alone: two files written, fsync'ed and renamed, the directory fsync'ed.
  const std::string body(bytes, 'x');
  double w_cpu = 0, w_wall = 0;
  for (int i = 0; i < n; ++i) {
    SnapshotMeta m;
    m.kind = "heap";
    m.reason = "bench";
    m.time = absl::Now();
    const double c = CpuSeconds(RUSAGE_THREAD);
    const absl::Time w = absl::Now();
    (*store)->Write(m, body).IgnoreError();
    w_cpu += CpuSeconds(RUSAGE_THREAD) - c;
    w_wall += absl::ToDoubleSeconds(absl::Now() - w);
  }
  printf("store: one snapshot write %.2f ms CPU %.2f ms wall\n", w_cpu / n * 1e3, w_wall / n * 1e3);
  printf(
      "go heap: /debug/pprof/heap work %.2f ms CPU %.2f ms wall; snapshot %.2f ms CPU %.2f ms "
      "wall (x%.2f CPU); profile %zu bytes; %d each, alternated\n",
      req_cpu / n * 1e3, req_wall / n * 1e3, snap_cpu / n * 1e3, snap_wall / n * 1e3,
      snap_cpu / req_cpu, bytes, n);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

void AtKill(const std::string& bin, const std::string& comm, bool native, int kills,
            const std::string& dir) {
  ProcessSymbolizer sym{ProcessSymbolizer::Options{}};
  HeapProfiler heap(&sym);
  if (native) {
    // Attached when the target is set, as before on_request became the default.
    heap.EnableNative([](pid_t p) { return StartMallocSampler(p, {}); },
                      NativeHeapOptions{MallocPolicy::kAlways});
  }
  ProfileRegistry reg;
  AddHeapSources(&heap, &reg).IgnoreError();
  auto store = SnapshotStore::Open({dir + "/" + comm, 64, 64 << 20});
  std::optional<ProcessInfo> target;
  std::mutex mu;
  FlightRecorderOptions o;
  o.policy.percents = {};
  FlightRecorder rec(o, store->get(), &reg, [&] {
    std::lock_guard<std::mutex> l(mu);
    return target;
  });
  uint64_t latency_sum = 0;
  auto watch = OomVictimWatch::Start([&](const OomVictim& v) {
    latency_sum += v.latency_ns;
    rec.OnOomVictim(v.pid, v.start_time);
  });
  if (!watch.ok()) {
    printf("at-kill: %s\n", std::string(watch.status().message()).c_str());
    return;
  }
  rec.Start();
  for (int i = 0; i < kills; ++i) {
    auto cg = MemoryCgroup::Create(absl::StrCat("pprof_oom_bench_", getpid(), "_", i), 64 << 20);
    const pid_t pid = Spawn((*cg)->Wrap({bin, "32"}));
    auto t = WaitExec(pid, comm);
    if (native && t) {
      absl::SleepFor(absl::Milliseconds(30));  // the loader has mapped libc
      heap.SetTarget(pid);
    }
    {
      std::lock_guard<std::mutex> l(mu);
      target = t;
    }
    waitpid(pid, nullptr, 0);
    absl::SleepFor(absl::Milliseconds(300));  // the capture finishes
    heap.SetTarget(std::nullopt);
  }
  rec.Stop();
  const FlightRecorderStats s = rec.stats();
  printf(
      "at-kill (%s): %llu/%d OOM kills seen, at-kill snapshot read from the dying process "
      "%llu, the last read near the limit instead %llu, none %llu%s%s; event latency %.0f us "
      "mean\n",
      comm.c_str(), static_cast<unsigned long long>(s.oom_events), kills,
      static_cast<unsigned long long>(s.oom_snapshots),
      static_cast<unsigned long long>(s.oom_snapshots_recent),
      static_cast<unsigned long long>(s.oom_snapshot_failures),
      s.last_oom_error.empty() ? "" : "; last error: ", s.last_oom_error.c_str(),
      s.oom_events ? latency_sum / 1e3 / s.oom_events : 0.0);
}

}  // namespace
}  // namespace pprof_sidecar

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: oom_bench GO_LEAK_BINARY C_LEAK_BINARY [KILLS]\n");
    return 2;
  }
  const int kills = argc > 3 ? atoi(argv[3]) : 10;
  const std::string dir = pprof_sidecar::testing::MakeTempDir("oom_bench");
  pprof_sidecar::WatcherCost(dir);
  pprof_sidecar::SnapshotVsRequest(argv[1], dir);
  pprof_sidecar::AtKill(argv[1], "oom_go_leak", false, kills, dir);
  pprof_sidecar::AtKill(argv[2], "oom_c_leak", true, kills, dir);
  return 0;
}
