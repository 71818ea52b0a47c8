// The C allocations of Go programs (cgo) end to end (issue 17): the real agent binary, as in a
// pod with the chart's agent.nativeHeap=true, next to Go targets built in the test. A cgo
// program's native_heap names the C functions that allocated and the Go functions that called
// them, while its heap stays the Go runtime's own profile; a Go program without cgo answers 501.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

// The numbers of the first line of `log` after its first `skip` lines that starts with
// `prefix`, waiting up to 30 s for it (empty on timeout).
std::vector<uint64_t> WaitLineNumbers(const std::string& log, const std::string& prefix,
                                      size_t skip = 0) {
  for (int i = 0; i < 600; ++i) {
    std::ifstream f(log);
    std::string line;
    size_t n = 0;
    while (std::getline(f, line)) {
      if (n++ < skip || !absl::StartsWith(line, prefix)) continue;
      std::vector<uint64_t> v;
      for (absl::string_view w : absl::StrSplit(line, ' ')) {
        uint64_t x;
        if (absl::SimpleAtoi(w, &x)) v.push_back(x);
      }
      return v;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return {};
}

// Share of values[index] in samples whose stack holds every function of `funcs` (exact names).
double ShareWithAll(const PprofSummary& s, const std::vector<std::string>& funcs, int index) {
  if (s.totals.size() <= static_cast<size_t>(index) || s.totals[index] == 0) return 0;
  int64_t v = 0;
  for (const SampleStack& st : s.samples) {
    bool all = true;
    for (const std::string& f : funcs) {
      all = all && std::find(st.frames.begin(), st.frames.end(), f) != st.frames.end();
    }
    if (all) v += st.values[index];
  }
  return static_cast<double>(v) / s.totals[index];
}

class NativeHeapE2eTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("native_heap_e2e"); }
  void TearDown() override {
    if (HasFailure() && agent_) printf("---- agent log ----\n%s\n", agent_->Log().c_str());
    if (!HasFailure()) RunCommand(absl::StrCat("rm -rf '", dir_, "'"));
  }
  // The agent for `pid`, with the capabilities of the chart's agent.nativeHeap=true (uprobes
  // through the perf PMU need SYS_ADMIN where the kernel has no uprobe sessions).
  bool StartAgent(pid_t pid, const std::vector<std::string>& flags = {}) {
    PodConditions pod;
    pod.caps = ChartCapabilities();
    pod.caps.push_back("SYS_ADMIN");
    std::vector<std::string> f = {absl::StrCat("--target_pid=", pid)};
    f.insert(f.end(), flags.begin(), flags.end());
    auto a = Agent::Start(f, dir_, pod);
    EXPECT_TRUE(a.ok()) << a.status();
    if (a.ok()) agent_ = *std::move(a);
    return a.ok();
  }
  absl::StatusOr<PprofSummary> Fetch(const std::string& url, const std::string& name) {
    auto r = agent_->Get(url);
    if (!r.ok()) return r.status();
    if (r->status != 200) return absl::InternalError(absl::StrCat(r->status, ": ", r->body));
    const std::string path = absl::StrCat(dir_, "/", name, ".pb.gz");
    std::ofstream(path, std::ios::binary) << r->body;
    return SummarizeProfile(path);
  }

  // A cgo program (tests/targets/heap_cgo, its C code built without frame pointers, which uses
  // rbp as a general register) whose C functions c_big_fill and c_small_fill, called from
  // main.bigGo and main.smallGo, and c_cb_fill, called from main.cbInner in a callback from C
  // (c_outer), malloc/calloc known amounts, half of which stay live. native_heap (probes
  // attached by its first request) puts >= 90 % of inuse_space under the right C function with
  // its Go caller above it (through runtime.cgocall up to main.main; for the callback, through
  // runtime.cgocallback to crosscall2), and the bytes match the program's own count; heap stays the
  // Go runtime's own profile and says where the C allocations are.
  void RunCgo(const std::string& version, bool go_tool_pprof) {
    ASSERT_OK_AND_ASSIGN(
        bin, BuildGoCached(version, TestDataDir() + "/targets/heap_cgo", "", dir_ + "/heap_cgo"));
    const std::string log = dir_ + "/target.log";
    ASSERT_OK_AND_ASSIGN(target, Child::Start({bin, "-n", "49152"}, log));
    ASSERT_FALSE(WaitLineNumbers(log, "ready ").empty()) << target->Log();
    ASSERT_TRUE(StartAgent(target->pid(), {"--heap_sample_bytes=32768"}));
    ASSERT_OK_AND_ASSIGN(index, agent_->Get("/debug/pprof/"));
    EXPECT_TRUE(absl::StrContains(index.body, "native_heap: </div> A sampling of C/C++"))
        << index.body;
    EXPECT_TRUE(absl::StrContains(index.body, "native_allocs: </div>")) << index.body;
    ASSERT_OK_AND_ASSIGN(health, agent_->Get("/healthz"));
    EXPECT_TRUE(
        absl::StrContains(health.body, "native_heap: C allocations (cgo) sampled on request"))
        << health.body;
    EXPECT_EQ(Metric(*agent_, "pprof_sidecar_malloc_probes"), 0);  // nobody asked yet
    ASSERT_OK_AND_ASSIGN(first, Fetch("/debug/pprof/native_heap", "native-first"));
    EXPECT_TRUE(absl::StrContains(first.raw, "this request attached the malloc probes"))
        << first.raw;
    EXPECT_GT(Metric(*agent_, "pprof_sidecar_malloc_probes"), 0);
    ASSERT_EQ(kill(target->pid(), SIGUSR1), 0);
    // Allocated and live bytes at big, small and cb: 144, 48 and 96 MiB, half of each live.
    const std::vector<uint64_t> truth = WaitLineNumbers(log, "done ");
    ASSERT_EQ(truth.size(), 6u) << target->Log();
    ASSERT_OK_AND_ASSIGN(s, Fetch("/debug/pprof/native_heap", "native"));
    ASSERT_EQ(s.sample_types.size(), 4u);
    EXPECT_EQ(s.sample_types[3].type, "inuse_space");
    ASSERT_GT(s.totals[3], 0) << s.raw;
    const double big = ShareWithAll(s, {"c_big_fill", "main.bigGo"}, 3),
                 small = ShareWithAll(s, {"c_small_fill", "main.smallGo"}, 3),
                 cb = ShareWithAll(s,
                                   {"c_cb_fill", "main.cbInner", "main.goAlloc",
                                    "runtime.cgocallback", "crosscall2"},
                                   3);
    // ~2,300, ~770 and ~1,500 live samples: SD 2 %, 3.6 % and 2.6 %.
    EXPECT_GE(big + small + cb, 0.9) << s.raw;
    EXPECT_NEAR(big * s.totals[3] / truth[1], 1.0, 0.15) << s.raw;
    EXPECT_NEAR(small * s.totals[3] / truth[3], 1.0, 0.15) << s.raw;
    EXPECT_NEAR(cb * s.totals[3] / truth[5], 1.0, 0.15) << s.raw;
    // The callback's stack ends in the outer C frames (c_outer has no frame pointer): the Go
    // frames that called c_outer (main.callbackGo) are not reached.
    // The whole way: C, the cgo call, the Go callers up to main.
    EXPECT_GE(ShareWithAll(
                  s, {"c_big_fill", "runtime.cgocall", "main.bigGo", "main.serve", "main.main"}, 3),
              0.95 * big)
        << s.raw;
    EXPECT_NEAR(CumShare(s, "c_big_fill", 1) * s.totals[1] / truth[0], 1.0, 0.15) << s.raw;
    ASSERT_OK_AND_ASSIGN(allocs, Fetch("/debug/pprof/native_allocs", "native-allocs"));
    EXPECT_EQ(allocs.default_sample_type, "alloc_space");

    // heap is still the Go runtime's own profile, and says where the C allocations are.
    ASSERT_OK_AND_ASSIGN(heap, Fetch("/debug/pprof/heap", "heap"));
    EXPECT_TRUE(absl::StrContains(heap.raw, "/debug/pprof/native_heap")) << heap.raw;
    EXPECT_FALSE(absl::StrContains(heap.raw, "malloc profiling policy")) << heap.raw;
    EXPECT_EQ(CumShare(heap, "c_big_fill", 3), 0) << heap.raw;
    if (!go_tool_pprof) return;
    const std::string home = dir_ + "/home", tmp = dir_ + "/pproftmp";
    mkdir(home.c_str(), 0700);
    mkdir(tmp.c_str(), 0700);
    ASSERT_OK_AND_ASSIGN(go, GoTool(version));
    CommandResult r = RunCommand(absl::StrCat(
        "HOME='", home, "' PPROF_TMPDIR='", tmp, "' PPROF_BINARY_PATH=/nonexistent GOCACHE='",
        GoCacheDir(version), "' ", go, " tool pprof -top -cum '", dir_, "/native.pb.gz'"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    printf("%s\n", r.output.c_str());
    EXPECT_TRUE(absl::StrContains(r.output, "main.bigGo")) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "c_small_fill")) << r.output;
  }

  std::string dir_;
  std::unique_ptr<Agent> agent_;
};

TEST_F(NativeHeapE2eTest, CgoOldestGo) { RunCgo(OldestAndNewestGo().front(), false); }
TEST_F(NativeHeapE2eTest, CgoNewestGo) { RunCgo(OldestAndNewestGo().back(), true); }

// A Go program without cgo maps no C library: native_heap answers 501 saying so (nothing to
// probe, whatever the agent's means; no attach is tried) and /healthz says it.
TEST_F(NativeHeapE2eTest, PureGoAnswers501) {
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached("1.19", TestDataDir() + "/targets/go_cpu_split", "",
                                          dir_ + "/go_cpu_split"));
  ASSERT_OK_AND_ASSIGN(target, Child::Start({bin, "-seconds", "60"}, dir_ + "/target.log"));
  ASSERT_TRUE(StartAgent(target->pid()));
  for (const char* path : {"/debug/pprof/native_heap", "/debug/pprof/native_allocs?seconds=1"}) {
    ASSERT_OK_AND_ASSIGN(r, agent_->Get(path));
    EXPECT_EQ(r.status, 501) << path << ": " << r.body;
    EXPECT_TRUE(absl::StrContains(r.body, "maps no C allocator")) << r.body;
  }
  ASSERT_OK_AND_ASSIGN(health, agent_->Get("/healthz"));
  EXPECT_TRUE(absl::StrContains(health.body, "native_heap: the Go target maps no C library"))
      << health.body;
  EXPECT_EQ(Metric(*agent_, "pprof_sidecar_malloc_attach_errors_total"), 0);  // none tried
}

}  // namespace
}  // namespace pprof_sidecar::testing
