// End-to-end tests of issue 2: the real pprof-sidecar binary, real BPF sampling, real targets
// built from source, profiles fetched over HTTP and read with google/pprof and `go tool pprof`.
// Needs root (BPF, perf events, unshare/mount). Each test starts its own agent on a free port.
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

constexpr double kSplitTolerance = 0.05;  // ±5 percentage points
// Samples vs hz × target CPU-seconds: ±10 % over all windows of a test (the bound), ±25 %
// per window. On a loaded VM a single window is noisier (seen: 0.80 at load average 8 on 2 vCPUs,
// no steal accounting): a preempted vCPU's missed cpu-clock hrtimer periods collapse into one
// sample while the guest still accounts the time to the task. Split tests take more windows on
// a busy machine, which also tightens the aggregate.
constexpr double kSampleTolerance = 0.10;
constexpr double kWindowSampleTolerance = 0.25;
// A 75 % share measured over n samples has a binomial standard deviation of
// sqrt(0.75 * 0.25 / n): 2,000 samples put ±5 pp at 5.2 sigma (800 gave 3.3 sigma, and shares
// of 0.72..0.78 were seen). A quiet 2-CPU machine yields them in two 5 s windows; split tests
// take up to kMaxWindows windows when the machine is busy.
constexpr int64_t kMinSplitSamples = 2000;
constexpr int kMatrixHz = 250;  // the Go version matrix's split test
constexpr int kMaxWindows = 12;  // more windows only when the machine is busy

std::string GoSplitSrc() { return TestDataDir() + "/targets/go_cpu_split"; }
std::string GoSplitMain() { return GoSplitSrc() + "/main.go"; }

class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("e2e"); }
  void TearDown() override {
    // Agent logs help to diagnose any failure.
    if (HasFailure()) {
      for (const auto& a : agents_) {
        printf("---- agent log (port %d) ----\n%s\n", a->port(), a->Log().c_str());
      }
    }
    if (!HasFailure()) RunCommand(absl::StrCat("rm -rf '", dir_, "'"));
  }

  // Starts the agent, owned by the fixture until the end of the test (its log is printed if the
  // test fails). Returns nullptr on failure (the test has then already failed).
  Agent* StartAgent(const std::vector<std::string>& flags) {
    auto a = Agent::Start(flags, dir_);
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return nullptr;
    agents_.push_back(*std::move(a));
    return agents_.back().get();
  }

  absl::StatusOr<std::unique_ptr<Child>> StartChild(const std::vector<std::string>& argv,
                                                    const std::string& name) {
    return Child::Start(argv, absl::StrCat(dir_, "/", name, ".log"));
  }

  // Polls /healthz until its body contains `needle` (or the timeout passes); returns the time
  // it took, or nullopt.
  std::optional<absl::Duration> WaitHealthz(const Agent& a, const std::string& needle,
                                            absl::Duration timeout, std::string* last = nullptr) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < timeout) {
      auto r = a.Get("/healthz", absl::Seconds(2));
      if (r.ok()) {
        if (last) *last = r->body;
        if (r->status == 200 && absl::StrContains(r->body, needle)) return absl::Now() - start;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }

  std::string dir_;
  std::vector<std::unique_ptr<Agent>> agents_;
};

// Share of samples whose outermost frame is `func`.
double RootShare(const PprofSummary& s, const std::string& func) {
  auto it = s.roots.find(func);
  return it == s.roots.end() || s.totals.empty() || s.totals[0] == 0
             ? 0
             : static_cast<double>(it->second) / s.totals[0];
}

// The `n` functions with the most flat samples, "name flat" per line: where the samples went
// when an attribution check fails.
std::string TopFlat(const PprofSummary& s, size_t n = 12) {
  std::vector<std::pair<int64_t, std::string>> v;
  for (const auto& [name, st] : s.funcs) {
    if (!st.flat.empty() && st.flat[0] > 0) v.emplace_back(st.flat[0], name);
  }
  std::sort(v.rbegin(), v.rend());
  std::string out;
  for (size_t i = 0; i < v.size() && i < n; ++i)
    absl::StrAppend(&out, v[i].second, " ", v[i].first, "\n");
  return out;
}

// Asserts that Go function `func` of go_cpu_split is in the profile with its source file and
// only with lines inside its body.
void ExpectGoFuncWithLines(const PprofSummary& s, const std::string& short_name) {
  const std::string func = "main." + short_name;
  auto it = s.funcs.find(func);
  ASSERT_NE(it, s.funcs.end()) << func << " missing; profile:\n" << s.raw;
  EXPECT_TRUE(absl::EndsWith(it->second.filename, "main.go"))
      << func << " file \"" << it->second.filename << "\"";
  const auto [first, last] = GoFuncLines(GoSplitMain(), short_name);
  ASSERT_GT(first, 0);
  ASSERT_GT(last, first);
  int lines = 0;
  for (const LineStats& l : s.lines) {
    if (l.function != func) continue;
    ++lines;
    EXPECT_GE(l.line, first) << func;
    EXPECT_LE(l.line, last) << func;
  }
  EXPECT_GT(lines, 0) << func << " has no line information";
}

// Sample count vs. hz × CPU time, summed over windows.
struct SampleBudget {
  double samples = 0, expected = 0;
  void ExpectMatches() const {
    printf("all windows: samples %.0f, expected %.0f (ratio %.3f)\n", samples, expected,
           samples / expected);
    EXPECT_NEAR(samples, expected, kSampleTolerance * expected);
  }
};

// Checks the profile's total sample count against hz × the target's CPU time in the window and
// adds both to `budget`.
void ExpectSamplesMatchCpu(const PprofSummary& s, const CpuMonitor& mon, int hz,
                           SampleBudget* budget, double* cpu_out = nullptr) {
  ASSERT_GT(s.time_nanos, 0);
  ASSERT_GT(s.duration_nanos, 0);
  auto cpu = mon.CpuSecondsBetween(s.time_nanos, s.time_nanos + s.duration_nanos);
  ASSERT_TRUE(cpu.has_value()) << "CPU readings do not cover the profile window";
  ASSERT_GT(*cpu, 0.5) << "target barely ran during the window";
  ASSERT_FALSE(s.totals.empty());
  const double expected = hz * *cpu;
  printf("window %.3f s: target cpu %.3f s, samples %lld, expected %.0f (ratio %.3f)\n",
         s.duration_nanos / 1e9, *cpu, static_cast<long long>(s.totals[0]), expected,
         s.totals[0] / expected);
  EXPECT_NEAR(static_cast<double>(s.totals[0]), expected, kWindowSampleTolerance * expected);
  budget->samples += s.totals[0];
  budget->expected += expected;
  if (cpu_out) *cpu_out = *cpu;
}

void ExpectCpuProfileShape(const PprofSummary& s, int hz) {
  ASSERT_EQ(s.sample_types.size(), 2u);
  EXPECT_EQ(s.sample_types[0].type, "samples");
  EXPECT_EQ(s.sample_types[0].unit, "count");
  EXPECT_EQ(s.sample_types[1].type, "cpu");
  EXPECT_EQ(s.sample_types[1].unit, "nanoseconds");
  EXPECT_EQ(s.period_type.type, "cpu");
  EXPECT_EQ(s.period, 1000000000LL / hz);
  ASSERT_EQ(s.totals.size(), 2u);
  EXPECT_EQ(s.totals[1], s.totals[0] * s.period);
}

// ---- 1. Go target per release and build (plain; stripped PIE -trimpath): split, file:line,
// samples ≈ hz × CPU-seconds, stacks reaching their thread's root. ----

// Outermost frames of complete Go stacks: goroutines start at goexit, system threads (g0) at
// mstart, the process at rt0_go; g0 stacks entered by mcall end there (as in Go's traceback).
double GoRootShare(const PprofSummary& s) {
  int64_t total = 0, root = 0;
  for (const auto& [fn, v] : s.roots) {
    total += v;
    if (fn == "runtime.goexit" || fn == "runtime.mstart" || fn == "runtime.mstart0" ||
        fn == "runtime.rt0_go" || fn == "runtime.mcall") {
      root += v;
    }
  }
  return total ? static_cast<double>(root) / total : 0;
}

struct GoBuild {
  std::string version;
  bool stripped = false;  // kGoStrippedPie
};

class GoSplitTest : public E2eTest, public ::testing::WithParamInterface<GoBuild> {};

TEST_P(GoSplitTest, SplitLinesAndSampleCount) {
  const GoBuild& p = GetParam();
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached(p.version, GoSplitSrc(), p.stripped ? kGoStrippedPie : "",
                                          dir_ + "/go_cpu_split"));
  if (p.stripped) {  // really stripped and position independent
    CommandResult hdr = RunCommand("readelf -h -S -W '" + bin + "'");
    ASSERT_EQ(hdr.exit_code, 0) << hdr.output;
    ASSERT_TRUE(absl::StrContains(hdr.output, "DYN (")) << hdr.output;
    ASSERT_FALSE(absl::StrContains(hdr.output, ".symtab")) << hdr.output;
  }
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "-goroutines", "2", "-seconds", "120"}, "target"));
  CpuMonitor mon(target->pid());
  // What varies across the matrix is the Go binary (pclntab, unwinding), not the clock: 250 Hz
  // (the perf clock; the default tick clock is tested by the other e2e tests) gathers the split's
  // samples in one or two windows instead of three.
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid()),
                           absl::StrCat("--cpu_sampling_hz=", kMatrixHz)});
  ASSERT_TRUE(agent);
  // Every window must be right on its own (shape, file:line, samples vs CPU); the split and the
  // share of complete stacks are judged over enough samples: more windows are taken if the
  // machine is busy.
  int64_t hot = 0, cold = 0;
  double rooted = 0, samples = 0;
  SampleBudget budget;
  for (int i = 0; i < kMaxWindows && hot + cold < kMinSplitSamples; ++i) {
    SCOPED_TRACE(absl::StrCat("window ", i));
    ASSERT_OK_AND_ASSIGN(prof,
                         FetchProfile(agent->port(), 5, absl::StrCat(dir_, "/cpu", i, ".pb.gz")));
    const PprofSummary& s = prof.summary;
    ExpectCpuProfileShape(s, kMatrixHz);
    EXPECT_GE(s.duration_nanos, 5'000'000'000LL);
    EXPECT_LT(s.duration_nanos, 6'000'000'000LL);
    ExpectGoFuncWithLines(s, "hotPath");
    ExpectGoFuncWithLines(s, "coldPath");
    // Samples with hotPath/coldPath anywhere in the stack: a sample taken while the thread was in
    // the kernel (interrupt, fault) or in a runtime callee still belongs to the function.
    const int64_t h = std::llround(CumShare(s, "main.hotPath") * s.totals[0]),
                  c = std::llround(CumShare(s, "main.coldPath") * s.totals[0]);
    EXPECT_GE(h + c, 0.8 * s.totals[0]) << "the target's work is not where the profile says; top:\n"
                                        << TopFlat(s);
    ExpectSamplesMatchCpu(s, mon, kMatrixHz, &budget);
    hot += h;
    cold += c;
    rooted += GoRootShare(s) * s.totals[0];
    samples += s.totals[0];
  }
  const double share = hot + cold > 0 ? static_cast<double>(hot) / (hot + cold) : 0;
  printf("go%s %s: hotPath %lld coldPath %lld share %.3f, %.2f%% of %.0f samples rooted\n",
         p.version.c_str(), p.stripped ? "stripped PIE" : "plain", static_cast<long long>(hot),
         static_cast<long long>(cold), share, samples > 0 ? 100 * rooted / samples : 0.0, samples);
  ASSERT_GE(hot + cold, kMinSplitSamples) << "too few samples for a meaningful split";
  EXPECT_NEAR(share, 0.75, kSplitTolerance);
  // Complete stacks: their outermost frame is the goroutine's or thread's root.
  EXPECT_GE(rooted / samples, 0.99);
  budget.ExpectMatches();
}

// Every release as stripped PIE (symbols from pclntab alone, as most shipped controllers are);
// with a symbol table, the oldest and newest (the library tests build every release plain).
std::vector<GoBuild> GoMatrix() {
  std::vector<GoBuild> m;
  const std::vector<std::string> ends = OldestAndNewestGo();
  for (const std::string& v : GoVersions()) {
    if (std::find(ends.begin(), ends.end(), v) != ends.end()) m.push_back({v, false});
    m.push_back({v, true});
  }
  return m;
}

INSTANTIATE_TEST_SUITE_P(Toolchains, GoSplitTest, ::testing::ValuesIn(GoMatrix()),
                         [](const ::testing::TestParamInfo<GoBuild>& p) {
                           return GoVersionName(p.param.version) +
                                  (p.param.stripped ? "_stripped_pie" : "_plain");
                         });

// Known gap (frame-pointer unwinding): hotPath is a Go leaf with a zero-size frame, so it never
// pushes BP; a BP-chain walk from inside it reads its caller's saved BP/return address and skips
// main.worker (stacks show main.main.func1 -> main.hotPath). Go's own profiler reports
// main.worker -> main.hotPath. Enable once the leaf's return address is taken from [SP] (Go
// pclntab's pcsp delta is 0 there) or full unwinding lands.
TEST_F(E2eTest, GoFramelessLeafKeepsItsCaller) {
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached("1.19", GoSplitSrc(), "", dir_ + "/go_cpu_split"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "-goroutines", "1", "-seconds", "120"}, "target"));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  ASSERT_OK_AND_ASSIGN(prof, FetchProfile(agent->port(), 3, dir_ + "/cpu.pb.gz"));
  int64_t hot = 0, hot_from_worker = 0;
  for (const SampleStack& st : prof.summary.samples) {
    if (st.frames.size() < 2 || st.frames[0] != "main.hotPath") continue;
    hot += st.values[0];
    if (st.frames[1] == "main.worker") hot_from_worker += st.values[0];
  }
  ASSERT_GT(hot, 50);
  EXPECT_GE(hot_from_worker, 0.95 * hot) << prof.summary.raw;
}

// Go's traceback leaves out the level of a compiler wrapper that calls were inlined into (a `go`
// statement's gowrap, Go 1.22+), in its CPU profile as in every other: the agent's CPU profile of
// the same process names the same main.* functions on the same stacks.
TEST_F(E2eTest, GoWrapperLevelsLeftOutAsInGosOwnCpuProfile) {
  const std::string go = GoVersions().back();
  ASSERT_OK_AND_ASSIGN(
      bin, BuildGoCached(go, TestDataDir() + "/targets/go_gowrap", "", dir_ + "/go_gowrap"));
  const std::string own_path = dir_ + "/own.pb.gz";
  ASSERT_OK_AND_ASSIGN(
      target, StartChild({bin, "-seconds", "5", "-cpuprofile", own_path}, "target"));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  ASSERT_OK_AND_ASSIGN(ours, FetchProfile(agent->port(), 3, dir_ + "/cpu.pb.gz"));
  const std::optional<int> exit = target->WaitExit(absl::Seconds(20));
  ASSERT_TRUE(exit.has_value() && *exit == 0) << target->Log();
  ASSERT_OK_AND_ASSIGN(own, SummarizeProfile(own_path));
  // The main.* callers of main.spin, as stacks leaf first.
  auto stacks = [](const PprofSummary& s) {
    std::set<std::string> out;
    for (const SampleStack& st : s.samples) {
      if (st.frames.empty() || st.frames[0] != "main.spin") continue;
      std::string key;
      for (const std::string& f : st.frames) {
        if (absl::StartsWith(f, "main.")) absl::StrAppend(&key, f, ";");
      }
      out.insert(key);
    }
    return out;
  };
  const std::set<std::string> want = stacks(own), got = stacks(ours.summary);
  ASSERT_FALSE(want.empty()) << own.raw;
  EXPECT_EQ(got, want) << ours.summary.raw;
  for (const auto& [fn, stats] : ours.summary.funcs) EXPECT_FALSE(absl::StrContains(fn, "gowrap"));
}

// ---- 3. C target. ----

TEST_F(E2eTest, CTargetSplitAndNames) {
  ASSERT_OK_AND_ASSIGN(bin, BuildNative({TestDataDir() + "/targets/c_spin/c_spin.c"},
                                        "-O0 -fno-omit-frame-pointer -pthread", dir_ + "/c_spin"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "nowait", "2", "60", "split"}, "target"));
  CpuMonitor mon(target->pid());
  // 97 Hz and c_spin's randomized chunk lengths: sampling cannot phase-lock with its cycles.
  constexpr int kHz = 97;
  auto agent = StartAgent(
      {absl::StrCat("--target_pid=", target->pid()), absl::StrCat("--cpu_sampling_hz=", kHz)});
  ASSERT_TRUE(agent);
  double hot = 0, cold = 0;  // samples with spin_hot / spin_cold anywhere in the stack
  SampleBudget budget;
  for (int i = 0; i < kMaxWindows && hot + cold < kMinSplitSamples; ++i) {
    SCOPED_TRACE(absl::StrCat("window ", i));
    ASSERT_OK_AND_ASSIGN(prof,
                         FetchProfile(agent->port(), 5, absl::StrCat(dir_, "/cpu", i, ".pb.gz")));
    const PprofSummary& s = prof.summary;
    ExpectCpuProfileShape(s, kHz);
    for (const char* f : {"spin_hot", "spin_cold", "worker"}) {
      EXPECT_TRUE(s.funcs.count(f)) << f << " missing; profile:\n" << s.raw;
    }
    // spin_* call clock_gettime (vDSO or syscall) to check their budget: count callees too.
    const double h = CumShare(s, "spin_hot") * s.totals[0],
                 c = CumShare(s, "spin_cold") * s.totals[0];
    EXPECT_GT(h + c, 0.8 * s.totals[0]);
    // Stacks through the frame-pointer chain reach the thread function.
    int64_t with_hot = 0, with_hot_and_worker = 0;
    for (const SampleStack& st : s.samples) {
      bool in_hot = std::find(st.frames.begin(), st.frames.end(), "spin_hot") != st.frames.end();
      bool in_worker = std::find(st.frames.begin(), st.frames.end(), "worker") != st.frames.end();
      with_hot += in_hot ? st.values[0] : 0;
      with_hot_and_worker += in_hot && in_worker ? st.values[0] : 0;
    }
    EXPECT_GE(with_hot_and_worker, 0.9 * with_hot);
    ExpectSamplesMatchCpu(s, mon, kHz, &budget);
    hot += h;
    cold += c;
  }
  ASSERT_GE(hot + cold, kMinSplitSamples);
  printf("c: spin_hot %.0f spin_cold %.0f share %.3f\n", hot, cold, hot / (hot + cold));
  EXPECT_NEAR(hot / (hot + cold), 0.75, kSplitTolerance);
  budget.ExpectMatches();
}

// Kernel frames of a target that lives in read(2), with the default (tick) clock, under
// kptr_restrict=1: named with the chart's CAP_SYSLOG, one "[kernel]" frame without it.
TEST_F(E2eTest, KernelFramesWithAndWithoutKernelSymbols) {
  ASSERT_OK_AND_ASSIGN(bin, BuildNative({TestDataDir() + "/targets/c_spin/c_spin.c"},
                                        "-O0 -fno-omit-frame-pointer -pthread", dir_ + "/c_sys"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "nowait", "1", "120", "syscall"}, "target"));
  for (bool syslog : {true, false}) {
    SCOPED_TRACE(syslog ? "with CAP_SYSLOG" : "without CAP_SYSLOG");
    PodConditions pod;
    for (const std::string& c : ChartCapabilities()) {
      if (syslog || c != "SYSLOG") pod.caps.push_back(c);
    }
    auto a = Agent::Start({absl::StrCat("--target_pid=", target->pid())}, dir_, pod);
    ASSERT_TRUE(a.ok()) << a.status();
    auto h = (*a)->Get("/healthz");
    ASSERT_TRUE(h.ok());
    EXPECT_TRUE(absl::StrContains(h->body, "cpu: tick clock")) << h->body;
    ASSERT_OK_AND_ASSIGN(prof,
                         FetchProfile((*a)->port(), 3, absl::StrCat(dir_, "/k", syslog, ".pb.gz")));
    const PprofSummary& s = prof.summary;
    ASSERT_GT(s.totals[0], 50);
    // read(2) from /dev/zero: most samples are in the kernel, under the worker.
    const double in_worker = CumShare(s, "worker");
    EXPECT_GT(in_worker, 0.9) << s.raw;
    const double hidden = CumShare(s, "[kernel]");
    bool said = false;
    for (const auto& c : s.comments) said = said || absl::StrContains(c, "shown as [kernel]");
    if (syslog) {
      EXPECT_EQ(hidden, 0) << s.raw;
      EXPECT_FALSE(said);
      EXPECT_GT(CumShare(s, "read"), 0.5) << "kernel read path not named:\n" << s.raw;
    } else {
      EXPECT_GT(hidden, 0.5) << s.raw;
      EXPECT_TRUE(said) << absl::StrJoin(s.comments, "\n");
      // Only user frames and [kernel]: no kernel function name.
      EXPECT_TRUE(FindFuncs(s, "sys_").empty()) << s.raw;
    }
  }
}

// A server workload, whose threads block and wake all the time (network, scheduler, sysmon),
// unlike the CPU loops above: an HTTP server gzipping 128 KiB per request under two clients.
// Three profiles of the same windows: Go's own (the target's net/http/pprof), the agent with its
// default clock (the tick) and the agent with the perf clock. The default clock must put the same
// CPU under the handler as the other two (a clock that over-weights threads sleeping and waking
// on timers under-weights the handler).
TEST_F(E2eTest, ServerWorkloadDefaultClockAgreesWithGosOwnProfile) {
  const std::string go = GoVersions().back();
  ASSERT_OK_AND_ASSIGN(
      srv, BuildGoCached(go, TestDataDir() + "/targets/go_gzip_server", "", dir_ + "/gzsrv"));
  ASSERT_OK_AND_ASSIGN(
      load, BuildGoCached(go, TestDataDir() + "/targets/go_http_load", "", dir_ + "/load"));
  const int port = PickFreePort();
  ASSERT_OK_AND_ASSIGN(server, StartChild({srv, absl::StrCat("-addr=127.0.0.1:", port)}, "srv"));
  for (int i = 0; i < 100 && !HttpGet(port, "/work").ok(); ++i)
    absl::SleepFor(absl::Milliseconds(50));
  ASSERT_OK_AND_ASSIGN(
      clients, StartChild({load, absl::StrCat("-url=http://127.0.0.1:", port, "/work")}, "load"));
  const std::string pid = absl::StrCat("--target_pid=", server->pid());
  auto tick = StartAgent({pid});
  auto perf = StartAgent({pid, "--cpu_sampling_clock=perf"});
  ASSERT_TRUE(tick && perf);
  EXPECT_TRUE(absl::StrContains(tick->Get("/healthz")->body, "cpu: tick clock"));
  struct Tally {
    double handler = 0, total = 0;
  } own, t, p;
  auto add = [](const PprofSummary& s, Tally* to) {
    to->handler += CumShare(s, "main.handler") * s.totals[0];
    to->total += s.totals[0];
  };
  for (int w = 0; w < 4 && std::min({own.total, t.total, p.total}) < 1500; ++w) {
    SCOPED_TRACE(absl::StrCat("window ", w));
    auto own_f = std::async(std::launch::async, [&] {
      return HttpGet(port, "/debug/pprof/profile?seconds=10", absl::Seconds(40));
    });
    auto tick_f = std::async(std::launch::async, [&] {
      return FetchProfile(tick->port(), 10, absl::StrCat(dir_, "/tick", w, ".pb.gz"));
    });
    auto perf_f = std::async(std::launch::async, [&] {
      return FetchProfile(perf->port(), 10, absl::StrCat(dir_, "/perf", w, ".pb.gz"));
    });
    auto own_r = own_f.get();
    ASSERT_TRUE(own_r.ok() && own_r->status == 200) << own_r.status();
    const std::string own_path = absl::StrCat(dir_, "/own", w, ".pb.gz");
    std::ofstream(own_path) << own_r->body;
    ASSERT_OK_AND_ASSIGN(own_s, SummarizeProfile(own_path));
    ASSERT_OK_AND_ASSIGN(tick_p, tick_f.get());
    ASSERT_OK_AND_ASSIGN(perf_p, perf_f.get());
    add(own_s, &own);
    add(tick_p.summary, &t);
    add(perf_p.summary, &p);
  }
  ASSERT_GE(std::min({own.total, t.total, p.total}), 1000) << "too few samples";
  // Shares are binomial: the bound is 5 sigma of the difference.
  auto sigma = [](const Tally& a, const Tally& b) {
    const double pa = a.handler / a.total, pb = b.handler / b.total;
    return std::sqrt(pa * (1 - pa) / a.total + pb * (1 - pb) / b.total);
  };
  printf(
      "handler share: Go's own %.1f %% (%.0f samples), tick %.1f %% (%.0f), perf %.1f %% (%.0f)\n",
      100 * own.handler / own.total, own.total, 100 * t.handler / t.total, t.total,
      100 * p.handler / p.total, p.total);
  printf("handler samples: Go's own %.0f, tick %.0f, perf %.0f\n", own.handler, t.handler,
         p.handler);
  EXPECT_NEAR(t.handler / t.total, p.handler / p.total, 5 * sigma(t, p));
  // Go's own profile does not see some of the process's CPU (sysmon, threads without a P), so
  // its shares run higher under load: compare the handler's CPU itself, Poisson counts.
  EXPECT_NEAR(t.handler, own.handler, 5 * std::sqrt(t.handler + own.handler));
}

// ---- 4. `go tool pprof` straight from the agent's URL. ----

TEST_F(E2eTest, GoToolPprofFetchesFromUrl) {
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached("1.19", GoSplitSrc(), "", dir_ + "/go_cpu_split"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "-goroutines", "1", "-seconds", "120"}, "target"));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  const std::string home = dir_ + "/home", tmp = dir_ + "/pproftmp";
  mkdir(home.c_str(), 0700);
  mkdir(tmp.c_str(), 0700);
  CommandResult r = RunCommand(
      absl::StrCat("HOME='", home, "' PPROF_TMPDIR='", tmp, "' PPROF_BINARY_PATH=/nonexistent",
                   " /usr/lib/go-1.19/bin/go tool pprof -top 'http://127.0.0.1:", agent->port(),
                   "/debug/pprof/profile?seconds=3'"));
  printf("%s\n", r.output.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "main.hotPath")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "main.coldPath")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "Type: cpu")) << r.output;
  // pprof saved the fetched profile; it is a valid profile with the same functions.
  CommandResult ls = RunCommand(absl::StrCat("ls '", tmp, "'/pprof.*.pb.gz"));
  ASSERT_EQ(ls.exit_code, 0) << ls.output;
  std::string saved(absl::StripTrailingAsciiWhitespace(ls.output));
  ASSERT_OK_AND_ASSIGN(s, SummarizeProfile(saved));
  ExpectGoFuncWithLines(s, "hotPath");
}

// ---- 5. Targets in other mount / pid namespaces. ----

// Runs go_cpu_split as `name` from a tmpfs mounted in a private mount namespace (optionally in a
// new pid namespace as well), so its path does not exist in the agent's mount namespace.
class NamespaceTest : public E2eTest {
 protected:
  void RunNamespaced(const std::string& name, bool pid_ns) {
    ASSERT_OK_AND_ASSIGN(bin, BuildGoCached("1.19", GoSplitSrc(), "", dir_ + "/go_cpu_split"));
    const std::string mnt = dir_ + "/mnt";
    ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
    const std::string hidden = mnt + "/" + name;
    std::vector<std::string> argv = {"/usr/bin/unshare"};
    if (pid_ns) {
      for (const char* a : {"--pid", "--fork", "--kill-child", "--mount-proc"}) argv.push_back(a);
    } else {
      argv.push_back("--mount");
    }
    for (const char* a : {"--propagation", "private", "/bin/sh", "-c"}) argv.push_back(a);
    argv.push_back(absl::StrCat("mount -t tmpfs none '", mnt, "' && cp '", bin, "' '", hidden,
                                "' && exec '", hidden, "' -goroutines 2 -seconds 120"));
    ASSERT_OK_AND_ASSIGN(child, StartChild(argv, "target"));

    // The target as this (the agent's) pid namespace sees it.
    pid_t pid = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (pid == 0 && absl::Now() < deadline) {
      auto pids = PidsByComm(name);
      if (pids.size() == 1) pid = pids[0];
      if (pid == 0) absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_NE(pid, 0) << "target did not start:\n" << child->Log();
    if (!pid_ns) EXPECT_EQ(pid, child->pid());
    // Its binary is invisible here.
    struct stat st;
    EXPECT_NE(stat(hidden.c_str(), &st), 0) << hidden << " is visible in the agent's namespace";
    if (pid_ns) {
      CommandResult ns = RunCommand(absl::StrCat("grep NSpid /proc/", pid, "/status"));
      EXPECT_TRUE(absl::StrContains(ns.output, absl::StrCat(pid, "\t1"))) << ns.output;
    }

    auto agent = StartAgent({absl::StrCat("--target_name=^", name, "$")});
    ASSERT_TRUE(agent);
    std::string last;
    ASSERT_TRUE(WaitHealthz(*agent, absl::StrCat("pid ", pid, " "), absl::Seconds(5), &last))
        << last;
    ASSERT_OK_AND_ASSIGN(prof, FetchProfile(agent->port(), 3, dir_ + "/cpu.pb.gz"));
    ExpectGoFuncWithLines(prof.summary, "hotPath");
    ExpectGoFuncWithLines(prof.summary, "coldPath");
    EXPECT_GT(RootShare(prof.summary, "runtime.goexit"), 0.9) << prof.summary.raw;
    bool mapped = false;
    for (const MappingSummary& m : prof.summary.mappings) {
      if (absl::EndsWith(m.file, name)) mapped = m.has_functions;
    }
    EXPECT_TRUE(mapped) << "no symbolized mapping of " << name << ":\n" << prof.summary.raw;
  }
};

TEST_F(NamespaceTest, TargetInOwnMountNamespace) { RunNamespaced("gosplit_mntns", false); }

TEST_F(NamespaceTest, TargetInChildPidAndMountNamespace) { RunNamespaced("gosplit_pidns", true); }

// ---- 6. Following a restarting target. ----

TEST_F(E2eTest, FollowsTargetRestart) {
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached("1.19", GoSplitSrc(), "", dir_ + "/gosplit_rst"));
  std::vector<std::string> argv = {bin, "-goroutines", "1", "-seconds", "120"};
  ASSERT_OK_AND_ASSIGN(first, StartChild(argv, "target1"));
  auto agent = StartAgent({"--target_name=^gosplit_rst$"});
  ASSERT_TRUE(agent);
  std::string last;
  ASSERT_TRUE(WaitHealthz(*agent, absl::StrCat("pid ", first->pid(), " "), absl::Seconds(5), &last))
      << last;

  first->Kill();  // SIGKILL and reap: the pid is gone
  ASSERT_TRUE(WaitHealthz(*agent, "target: none", absl::Seconds(3), &last)) << last;
  ASSERT_OK_AND_ASSIGN(r, agent->Get("/debug/pprof/profile?seconds=1"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(r.x_go_pprof, "1");
  EXPECT_TRUE(absl::StrContains(r.body, "no target")) << r.body;

  ASSERT_OK_AND_ASSIGN(second, StartChild(argv, "target2"));
  auto took =
      WaitHealthz(*agent, absl::StrCat("pid ", second->pid(), " "), absl::Seconds(5), &last);
  ASSERT_TRUE(took.has_value()) << last;
  printf("re-discovered the restarted target in %s\n", absl::FormatDuration(*took).c_str());
  EXPECT_LE(*took, absl::Seconds(2));
  ASSERT_OK_AND_ASSIGN(prof, FetchProfile(agent->port(), 2, dir_ + "/cpu.pb.gz"));
  ExpectGoFuncWithLines(prof.summary, "hotPath");
  bool names_pid = false;
  for (const auto& c : prof.summary.comments) {
    names_pid |= absl::StrContains(c, absl::StrCat("pid ", second->pid(), " "));
  }
  EXPECT_TRUE(names_pid) << prof.summary.raw;
}

// ---- 7. Bad HTTP input, cmdline, metrics. ----

std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> m;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    double v;
    if (sp == absl::string_view::npos || !absl::SimpleAtod(line.substr(sp + 1), &v)) continue;
    m[std::string(line.substr(0, sp))] = v;
  }
  return m;
}

TEST_F(E2eTest, BadInputIsAnsweredAndAgentKeepsServing) {
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached("1.19", GoSplitSrc(), "", dir_ + "/go_cpu_split"));
  const std::vector<std::string> argv = {bin, "-goroutines", "1", "-seconds", "120", "-hash=false"};
  ASSERT_OK_AND_ASSIGN(target, StartChild(argv, "target"));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);

  int bad_requests = 0;
  for (const char* q : {"abc", "-1", "1.5", "301", "99999999999999999999", "3s"}) {
    SCOPED_TRACE(q);
    ASSERT_OK_AND_ASSIGN(r, agent->Get(absl::StrCat("/debug/pprof/profile?seconds=", q)));
    ++bad_requests;
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.x_go_pprof, "1");
    EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
    EXPECT_FALSE(r.body.empty());
  }
  {
    // Each header once, as Go writes them.
    auto raw = RawExchange(agent->port(), "GET /debug/pprof/profile?seconds=abc HTTP/1.1\r\n\r\n");
    ASSERT_TRUE(raw.ok()) << raw.status();
    const std::string head = absl::AsciiStrToLower(raw->substr(0, raw->find("\r\n\r\n")));
    EXPECT_TRUE(absl::StartsWith(head, "http/1.1 400")) << *raw;
    for (const char* h : {"\r\nx-go-pprof: 1", "\r\nx-content-type-options: nosniff",
                          "\r\ncontent-type: text/plain; charset=utf-8"}) {
      size_t first = head.find(h);
      EXPECT_NE(first, std::string::npos) << h << " missing:\n" << *raw;
      EXPECT_EQ(head.find(h, first + 1), std::string::npos) << h << " repeated:\n" << *raw;
    }
  }
  ASSERT_OK_AND_ASSIGN(nf, agent->Get("/debug/pprof/nonexistent"));
  EXPECT_EQ(nf.status, 404);
  EXPECT_TRUE(absl::StrContains(nf.body, "Unknown profile")) << nf.body;
  EXPECT_EQ(nf.x_go_pprof, "1");

  // Raw bytes: a TLS hello-like prefix, binary junk, an unknown method, an overlong request
  // line, a request that never ends, a negative Content-Length, nothing at all. Each is answered
  // with an error status (or, when incomplete, not at all) and never fatal.
  struct Junk {
    std::string bytes, want;  // want: prefix of the answer ("" : no answer)
  };
  const Junk junk[] = {
      {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 21),
       "HTTP/1.1 400"},
      {std::string("\x00\xff\xfe\r\n\x01\x02 HTTP/9.9\r\n\r\n", 18), "HTTP/1.1 400"},
      {"FOO /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 405"},
      {"GET /" + std::string(100000, 'a') + " HTTP/1.1\r\n\r\n", "HTTP/1.1 414"},
      {"GET /debug/pprof/profile?seconds=1 HTTP/1.1\r\nHost: x\r\n", ""},
      {"GET /debug/pprof/profile?seconds=%zz HTTP/1.1\r\n\r\n", "HTTP/1.1 400"},
      {"GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n", "HTTP/1.1 "},
      {"", ""},
  };
  for (const Junk& j : junk) {
    SCOPED_TRACE(j.bytes.substr(0, 40));
    auto out = RawExchange(agent->port(), j.bytes, absl::Seconds(3));
    ASSERT_TRUE(out.ok()) << out.status();
    if (j.want.empty()) {
      EXPECT_EQ(*out, "");
    } else {
      EXPECT_TRUE(absl::StartsWith(*out, j.want)) << out->substr(0, 200);
    }
    ASSERT_FALSE(agent->process().WaitExit(absl::ZeroDuration()).has_value())
        << "agent died; log:\n"
        << agent->Log();
  }

  // Still serving.
  ASSERT_OK_AND_ASSIGN(h, agent->Get("/healthz"));
  EXPECT_EQ(h.status, 200);
  ASSERT_OK_AND_ASSIGN(prof, FetchProfile(agent->port(), 2, dir_ + "/cpu.pb.gz"));
  ExpectGoFuncWithLines(prof.summary, "hotPath");

  // cmdline: argv joined by NUL, as Go's handler writes os.Args.
  ASSERT_OK_AND_ASSIGN(cmd, agent->Get("/debug/pprof/cmdline"));
  EXPECT_EQ(cmd.status, 200);
  EXPECT_EQ(cmd.body, absl::StrJoin(argv, std::string(1, '\0')));

  ASSERT_OK_AND_ASSIGN(met, agent->Get("/metrics"));
  EXPECT_EQ(met.status, 200);
  auto m = ParseMetrics(met.body);
  EXPECT_GT(m["pprof_sidecar_samples_total"], 0) << met.body;
  EXPECT_GE(m["pprof_sidecar_profile_samples_total"], prof.summary.totals[0]) << met.body;
  EXPECT_GE(m["pprof_sidecar_http_requests_total{code=\"400\"}"], bad_requests) << met.body;
  EXPECT_GE(m["pprof_sidecar_http_requests_total{code=\"404\"}"], 1) << met.body;
  EXPECT_GE(m["pprof_sidecar_http_requests_total{code=\"200\"}"], 3) << met.body;
  EXPECT_EQ(m["pprof_sidecar_target_pid"], target->pid()) << met.body;
}

// ---- 8. Non-loopback listen addresses. ----

TEST_F(E2eTest, NonLoopbackListenRefusedUnlessAllowed) {
  ASSERT_OK_AND_ASSIGN(sleeper, StartChild({"/bin/sleep", "120"}, "sleeper"));
  const std::string pid_flag = absl::StrCat("--target_pid=", sleeper->pid());
  for (const std::string& addr :
       {absl::StrCat("0.0.0.0:", PickFreePort()), absl::StrCat("[::]:", PickFreePort())}) {
    SCOPED_TRACE(addr);
    ASSERT_OK_AND_ASSIGN(
        agent, StartChild({AgentBinary(), pid_flag, "--listen_address=" + addr}, "refused"));
    auto st = agent->WaitExit(absl::Seconds(10));
    ASSERT_TRUE(st.has_value()) << "agent kept running on " << addr;
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) != 0);
    const std::string log = agent->Log();
    EXPECT_TRUE(absl::StrContains(log, "non-loopback")) << log;
    EXPECT_TRUE(absl::StrContains(log, "--allow_non_loopback_listen")) << log;
  }
  const int port = PickFreePort();
  auto agent = StartAgent(
      {pid_flag, absl::StrCat("--listen_address=0.0.0.0:", port), "--allow_non_loopback_listen"});
  ASSERT_TRUE(agent);  // answered /healthz on 127.0.0.1, which 0.0.0.0 covers
  ASSERT_OK_AND_ASSIGN(h, agent->Get("/healthz"));
  EXPECT_TRUE(absl::StrContains(h.body, absl::StrCat("pid ", sleeper->pid()))) << h.body;
}

// ---- 9. Overlapping profile requests. ----

TEST_F(E2eTest, ConcurrentProfilesEachGetTheirWindow) {
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached("1.19", GoSplitSrc(), "", dir_ + "/go_cpu_split"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "-goroutines", "1", "-seconds", "120"}, "target"));
  CpuMonitor mon(target->pid());
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  absl::StatusOr<FetchedProfile> a, b;
  std::thread ta([&] { a = FetchProfile(agent->port(), 5, dir_ + "/a.pb.gz"); });
  absl::SleepFor(absl::Seconds(1));
  std::thread tb([&] { b = FetchProfile(agent->port(), 2, dir_ + "/b.pb.gz"); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const PprofSummary &sa = a->summary, &sb = b->summary;
  EXPECT_GE(sa.duration_nanos, 5'000'000'000LL);
  EXPECT_LT(sa.duration_nanos, 5'800'000'000LL);
  EXPECT_GE(sb.duration_nanos, 2'000'000'000LL);
  EXPECT_LT(sb.duration_nanos, 2'800'000'000LL);
  // The windows overlapped: b lies within a.
  EXPECT_GT(sb.time_nanos, sa.time_nanos);
  EXPECT_LT(sb.time_nanos + sb.duration_nanos, sa.time_nanos + sa.duration_nanos);
  ExpectGoFuncWithLines(sa, "hotPath");
  ExpectGoFuncWithLines(sb, "hotPath");
  double cpu_a = 0, cpu_b = 0;
  SampleBudget budget;
  ExpectSamplesMatchCpu(sa, mon, 100, &budget, &cpu_a);
  ExpectSamplesMatchCpu(sb, mon, 100, &budget, &cpu_b);
  budget.ExpectMatches();
  ASSERT_GT(cpu_b, 0);
  ASSERT_GT(sb.totals[0], 0);
  const double ratio = static_cast<double>(sa.totals[0]) / sb.totals[0];
  printf("samples a/b %.3f, cpu a/b %.3f\n", ratio, cpu_a / cpu_b);
  EXPECT_NEAR(ratio, cpu_a / cpu_b, kWindowSampleTolerance * cpu_a / cpu_b);
}

// ---- 10. Heap and allocs profiles through the agent binary. ----

// The Go runtime's own heap profile read from the target, fetched by `go tool pprof` from the
// agent's URL, as a user would.
TEST_F(E2eTest, GoHeapProfileFromTheAgentsUrl) {
  const std::string version = GoVersions().back();
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached(version, TestDataDir() + "/targets/heap_go_split", "",
                                          dir_ + "/heap_go_split"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "-rate=4096", "-mb_per_sec=16"}, "target"));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  absl::SleepFor(absl::Seconds(2));  // a few GCs publish the profile
  ASSERT_OK_AND_ASSIGN(heap, agent->Get("/debug/pprof/heap"));
  ASSERT_EQ(heap.status, 200) << heap.body;
  EXPECT_EQ(heap.content_type, "application/octet-stream");
  const std::string path = dir_ + "/heap.pb.gz";
  std::ofstream(path, std::ios::binary) << heap.body;
  ASSERT_OK_AND_ASSIGN(s, SummarizeProfile(path));
  ASSERT_EQ(s.sample_types.size(), 4u);
  EXPECT_EQ(s.sample_types[3].type, "inuse_space");
  EXPECT_EQ(s.period, 4096);
  const double big = CumShare(s, "main.bigSite", 1), small = CumShare(s, "main.smallSite", 1);
  ASSERT_GT(big + small, 0.5) << s.raw;
  EXPECT_NEAR(big / (big + small), 0.75, 0.05) << s.raw;

  const std::string home = dir_ + "/home", tmp = dir_ + "/pproftmp";
  mkdir(home.c_str(), 0700);
  mkdir(tmp.c_str(), 0700);
  ASSERT_OK_AND_ASSIGN(go, GoTool(version));
  CommandResult r = RunCommand(
      absl::StrCat("HOME='", home, "' PPROF_TMPDIR='", tmp,
                   "' PPROF_BINARY_PATH=/nonexistent GOCACHE='", GoCacheDir(version), "' ", go,
                   " tool pprof -top -sample_index=alloc_space 'http://127.0.0.1:", agent->port(),
                   "/debug/pprof/allocs'"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "main.bigSite")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "main.smallSite")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "Type: alloc_space")) << r.output;
}

// ---- 11. Goroutine profiles through the agent binary (Go targets, read from their runtime). ----

// A stripped PIE Go target with known goroutine populations, under the chart's capabilities:
// the agent's debug=1 records of the blocked populations are the target's own, byte for byte,
// and `go tool pprof` reads debug=0 from the agent's URL.
TEST_F(E2eTest, GoGoroutineProfileFromTheAgentsUrl) {
  const std::string version = GoVersions().back();
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached(version, TestDataDir() + "/targets/go_goroutines",
                                          kGoStrippedPie, dir_ + "/go_goroutines"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({bin, "-recv=300", "-select=30", "-mutex=3"},
                                          "goroutines"));
  const int port = TargetPort(dir_ + "/goroutines.log");
  ASSERT_GT(port, 0);
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  ASSERT_OK_AND_ASSIGN(ours, agent->Get("/debug/pprof/goroutine?debug=1"));
  ASSERT_EQ(ours.status, 200) << ours.body;
  ASSERT_OK_AND_ASSIGN(own, HttpGet(port, "/debug/pprof/goroutine?debug=1"));
  ASSERT_EQ(own.status, 200);
  int same = 0;
  for (absl::string_view rec : absl::StrSplit(ours.body, "\n\n")) {
    if (absl::StartsWith(rec, "goroutine profile:")) rec.remove_prefix(rec.find('\n') + 1);
    if (!absl::StrContains(rec, "main.recvWaiter") && !absl::StrContains(rec, "main.selectWaiter") &&
        !absl::StrContains(rec, "main.mutexWaiter")) {
      continue;
    }
    EXPECT_TRUE(absl::StrContains(own.body, rec)) << rec << "\n---- target's own:\n" << own.body;
    ++same;
  }
  EXPECT_EQ(same, 3) << ours.body;
  EXPECT_TRUE(absl::StrContains(ours.body, "300 @ ")) << ours.body;

  const std::string home = dir_ + "/home", tmp = dir_ + "/pproftmp";
  mkdir(home.c_str(), 0700);
  mkdir(tmp.c_str(), 0700);
  ASSERT_OK_AND_ASSIGN(go, GoTool(version));
  CommandResult r = RunCommand(absl::StrCat(
      "HOME='", home, "' PPROF_TMPDIR='", tmp, "' PPROF_BINARY_PATH=/nonexistent GOCACHE='",
      GoCacheDir(version), "' ", go, " tool pprof -top 'http://127.0.0.1:", agent->port(),
      "/debug/pprof/goroutine'"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "main.recvWaiter")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "Type: goroutine")) << r.output;
}

// A C target driven through a FIFO on its stdin; its replies land in its log.
class FifoTarget {
 public:
  static absl::StatusOr<std::unique_ptr<FifoTarget>> Start(const std::string& bin,
                                                           const std::string& dir) {
    auto t = std::unique_ptr<FifoTarget>(new FifoTarget);
    t->fifo_ = dir + "/stdin";
    t->log_ = dir + "/target.log";
    if (mkfifo(t->fifo_.c_str(), 0600) != 0) return absl::InternalError("mkfifo failed");
    auto c = Child::Start({"/bin/sh", "-c", absl::StrCat("exec '", bin, "' < '", t->fifo_, "'")},
                          t->log_);
    if (!c.ok()) return c.status();
    t->child_ = *std::move(c);
    t->in_ = fopen(t->fifo_.c_str(), "w");  // blocks until the shell opened it for reading
    if (t->in_ == nullptr) return absl::InternalError("opening the fifo failed");
    if (t->WaitReply("ready ").empty()) return absl::InternalError("target did not start");
    return t;
  }
  ~FifoTarget() {
    if (in_) fclose(in_);
  }
  pid_t pid() const { return child_->pid(); }
  // Sends `cmd` and returns the first new line of the log starting with `prefix` ("" on timeout).
  std::string Command(const std::string& cmd, const std::string& prefix) {
    fprintf(in_, "%s\n", cmd.c_str());
    fflush(in_);
    return WaitReply(prefix);
  }

 private:
  FifoTarget() = default;
  std::string WaitReply(const std::string& prefix) {
    for (int i = 0; i < 600; ++i) {
      std::ifstream f(log_);
      std::string line;
      size_t n = 0;
      while (std::getline(f, line)) {
        if (n++ >= lines_seen_ && absl::StartsWith(line, prefix)) {
          lines_seen_ = n;
          return line;
        }
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return "";
  }
  std::string fifo_, log_;
  std::unique_ptr<Child> child_;
  FILE* in_ = nullptr;
  size_t lines_seen_ = 0;
};

std::vector<uint64_t> ReplyNumbers(const std::string& line) {
  std::vector<uint64_t> v;
  for (absl::string_view f : absl::StrSplit(line, ' ')) {
    uint64_t x;
    if (absl::SimpleAtoi(f, &x)) v.push_back(x);
  }
  return v;
}

// Whether the running kernel has uprobe sessions (6.13+: its BTF has their kfunc).
bool KernelHasUprobeSessions() {
  auto r = RunCommand("grep -c bpf_session_is_return /proc/kallsyms");
  return r.exit_code == 0;
}

// The pod conditions of an agent deployed with the chart's agent.nativeHeap=true: the chart's
// capabilities plus SYS_ADMIN, which uprobes through the perf PMU need on current kernels.
PodConditions NativeHeapPod() {
  PodConditions pod;
  pod.caps = ChartCapabilities();
  pod.caps.push_back("SYS_ADMIN");
  return pod;
}

// Malloc profiling through the agent, on request (the default): nothing is attached until the
// first heap/allocs request, which attaches the probes and says so; an allocator library the
// target loads later (dlopen) is probed on the agent's next target check, with no request. With
// the chart's default capabilities where the kernel has uprobe sessions (no SYS_ADMIN needed),
// else with SYS_ADMIN (the chart's agent.nativeHeap=true).
TEST_F(E2eTest, CHeapProfileFollowsAnAllocatorLoadedLater) {
  const std::string lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";
  ASSERT_EQ(access(lib.c_str(), R_OK), 0) << lib << " missing: scripts/install-deps.sh installs it";
  ASSERT_OK_AND_ASSIGN(
      bin, BuildNative({TestDataDir() + "/targets/heap_c_split/heap_c_split.c"},
                       "-O2 -g -fno-omit-frame-pointer -fno-builtin", dir_ + "/heap_c_split"));
  ASSERT_OK_AND_ASSIGN(target, FifoTarget::Start(bin, dir_));
  auto started =
      // A sample every ~5 allocations of a tight loop: 8 KiB stack copies (the default) would
      // outrun the reader's unwinding (drops, counted); the target has frame pointers anyway.
      Agent::Start({absl::StrCat("--target_pid=", target->pid()), "--heap_sample_bytes=16384",
                    "--user_stack_bytes=1024"},
                   dir_, NativeHeapPod());
  ASSERT_TRUE(started.status().ok()) << started.status();
  agents_.push_back(*std::move(started));
  Agent* agent = agents_.back().get();
  auto metric = [&](const std::string& name) { return Metric(*agent, name); };
  // Nobody asked: no probe, after several target checks.
  absl::SleepFor(absl::Seconds(1.5));
  EXPECT_EQ(metric("pprof_sidecar_malloc_probes"), 0);
  EXPECT_EQ(metric("pprof_sidecar_malloc_sampler_attached"), 0);
  auto fetch = [&](const std::string& name) -> absl::StatusOr<PprofSummary> {
    auto r = agent->Get("/debug/pprof/allocs");
    if (!r.ok()) return r.status();
    if (r->status != 200) return absl::InternalError(absl::StrCat(r->status, ": ", r->body));
    const std::string path = absl::StrCat(dir_, "/", name, ".pb.gz");
    std::ofstream(path, std::ios::binary) << r->body;
    return SummarizeProfile(path);
  };
  ASSERT_OK_AND_ASSIGN(first, fetch("allocs-first"));
  EXPECT_TRUE(absl::StrContains(first.raw, "this request attached the malloc probes")) << first.raw;
  EXPECT_TRUE(absl::StrContains(first.raw, "malloc profiling policy on_request")) << first.raw;
  EXPECT_GT(metric("pprof_sidecar_malloc_probes"), 0);
  const std::vector<uint64_t> truth = ReplyNumbers(target->Command("alloc 32768", "done "));
  ASSERT_EQ(truth.size(), 4u);
  ASSERT_OK_AND_ASSIGN(s, fetch("allocs"));
  EXPECT_EQ(s.default_sample_type, "alloc_space");
  EXPECT_FALSE(absl::StrContains(s.raw, "this request attached")) << s.raw;
  // ~5,500 and ~1,900 samples: SD 1.4 % and 2.3 %.
  const double big = CumShare(s, "big_site", 1) * s.totals[1],
               small = CumShare(s, "small_site", 1) * s.totals[1];
  EXPECT_NEAR(big / truth[0], 1.0, 0.15) << s.raw;
  EXPECT_NEAR(small / truth[1], 1.0, 0.15) << s.raw;
  EXPECT_NEAR(big / (big + small), 0.75, 0.05) << s.raw;

  ASSERT_EQ(target->Command("dlopen " + lib, "loaded"), "loaded");
  double late_probed = 0;
  // Rechecks are spaced to <= 0.1 % of the time: one that took 10 ms waits 10 s.
  for (int i = 0; i < 200 && late_probed < 8; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    late_probed = metric("pprof_sidecar_malloc_late_probed_functions_total");
  }
  // malloc, calloc, realloc, posix_memalign, memalign (= aligned_alloc), valloc, pvalloc, free.
  ASSERT_GE(late_probed, 8) << agent->Log();
  const std::vector<uint64_t> late = ReplyNumbers(target->Command("late 20000", "latedone "));
  ASSERT_EQ(late.size(), 1u);
  ASSERT_OK_AND_ASSIGN(s2, fetch("allocs-late"));
  const double late_site = CumShare(s2, "late_site", 1) * s2.totals[1];
  EXPECT_NEAR(late_site / late[0], 1.0, 0.15) << s2.raw;  // ~3,300 samples: SD 1.7 %
  EXPECT_TRUE(absl::StrContains(s2.raw, "libtcmalloc_minimal")) << s2.raw;
}

// On request: a seconds=N delta asked first is complete (the probes attach at its start); the
// probes are detached once no request came for --malloc_idle_detach_seconds, and the next
// request attaches them again. Through uprobe + uretprobe pairs (the path of kernels without
// uprobe sessions), with SYS_ADMIN as the chart's agent.nativeHeap=true grants it.
TEST_F(E2eTest, CHeapProbesDetachWhenRequestsStop) {
  ASSERT_OK_AND_ASSIGN(
      bin, BuildNative({TestDataDir() + "/targets/heap_c_split/heap_c_split.c"},
                       "-O2 -g -fno-omit-frame-pointer -fno-builtin", dir_ + "/heap_c_split"));
  ASSERT_OK_AND_ASSIGN(target, FifoTarget::Start(bin, dir_));
  auto started = Agent::Start({absl::StrCat("--target_pid=", target->pid()),
                               "--heap_sample_bytes=16384", "--malloc_idle_detach_seconds=2",
                               "--malloc_uprobe_sessions=false", "--user_stack_bytes=1024"},
                              dir_, NativeHeapPod());
  ASSERT_TRUE(started.status().ok()) << started.status();
  agents_.push_back(*std::move(started));
  Agent* agent = agents_.back().get();
  std::vector<uint64_t> truth;
  std::thread load([&] {
    absl::SleepFor(absl::Milliseconds(700));
    truth = ReplyNumbers(target->Command("alloc 32768", "done "));
  });
  auto r = agent->Get("/debug/pprof/allocs?seconds=3", absl::Seconds(15));
  load.join();
  ASSERT_TRUE(r.status().ok()) << r.status();
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_EQ(truth.size(), 4u);
  const std::string path = dir_ + "/delta.pb.gz";
  std::ofstream(path, std::ios::binary) << r->body;
  ASSERT_OK_AND_ASSIGN(s, SummarizeProfile(path));
  const double big = CumShare(s, "big_site", 1) * s.totals[1];
  EXPECT_NEAR(big / truth[0], 1.0, 0.15) << s.raw;  // ~5,500 samples: SD 1.4 %
  EXPECT_GT(Metric(*agent, "pprof_sidecar_malloc_probes"), 0);
  // Idle for 2 s after the request ended: detached at the next target check (500 ms).
  double probes = -1;
  for (int i = 0; i < 40 && probes != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    probes = Metric(*agent, "pprof_sidecar_malloc_probes");
  }
  EXPECT_EQ(probes, 0) << agent->Log();
  EXPECT_TRUE(absl::StrContains(agent->Log(), "probes detached")) << agent->Log();
  auto again = agent->Get("/debug/pprof/heap");
  ASSERT_TRUE(again.status().ok()) << again.status();
  EXPECT_EQ(again->status, 200) << again->body;
  EXPECT_GT(Metric(*agent, "pprof_sidecar_malloc_probes"), 0);
}

// With only the chart's default capabilities (no SYS_ADMIN), the kernel refuses uprobes through
// the perf PMU (the path on kernels without uprobe sessions, forced here): the heap request
// answers 503 naming the missing capability and the chart value, /healthz says it before and
// after, and the agent keeps serving.
TEST_F(E2eTest, CHeapWithoutSysAdminAnswers503NamingIt) {
  ASSERT_OK_AND_ASSIGN(
      bin, BuildNative({TestDataDir() + "/targets/heap_c_split/heap_c_split.c"},
                       "-O2 -g -fno-omit-frame-pointer -fno-builtin", dir_ + "/heap_c_split"));
  ASSERT_OK_AND_ASSIGN(target, FifoTarget::Start(bin, dir_));
  auto agent =
      StartAgent({absl::StrCat("--target_pid=", target->pid()), "--malloc_uprobe_sessions=false"});
  ASSERT_TRUE(agent);
  auto h = agent->Get("/healthz");
  ASSERT_TRUE(h.status().ok()) << h.status();
  EXPECT_TRUE(absl::StrContains(h->body, "malloc profiling on_request")) << h->body;
  EXPECT_TRUE(absl::StrContains(h->body, "lacks CAP_SYS_ADMIN")) << h->body;
  for (const char* path : {"/debug/pprof/heap", "/debug/pprof/allocs?seconds=1"}) {
    auto r = agent->Get(path);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, 503) << path << ": " << r->body;
    EXPECT_TRUE(absl::StrContains(r->body, "CAP_SYS_ADMIN")) << r->body;
    EXPECT_TRUE(absl::StrContains(r->body, "agent.nativeHeap=true")) << r->body;
  }
  h = agent->Get("/healthz");
  ASSERT_TRUE(h.status().ok()) << h.status();
  EXPECT_EQ(h->status, 200);
  EXPECT_TRUE(absl::StrContains(h->body, "last attach failed")) << h->body;
  EXPECT_EQ(Metric(*agent, "pprof_sidecar_malloc_probes"), 0);
}

}  // namespace
}  // namespace pprof_sidecar::testing
