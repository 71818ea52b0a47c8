// A real controller: a controller-runtime manager (tests/targets/controller, modules fetched
// through the Go module proxy) built with the newest Go of the matrix, stripped PIE, profiled by
// the agent binary and compared with the controller's own net/http/pprof (the manager's
// PprofBindAddress): the CPU split of its reconciler and its heap profile.
#include <stdio.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

constexpr char kRender[] = "main.(*reconciler).render";
constexpr char kAudit[] = "main.(*reconciler).audit";
constexpr char kHash[] = "sha256.block";
constexpr int kWindowSeconds = 10;
constexpr int kMaxWindows = 12;
constexpr double kMinSamples = 2000;

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

// Weight (values[0]) of the samples whose stack holds a frame containing `a` and one containing
// `b`: the hashing done under render or audit, apart from their allocations (whose GC assists
// follow bytes, not the 3:1 work split).
double WeightWith(const PprofSummary& s, const std::string& a, const std::string& b) {
  double w = 0;
  for (const SampleStack& st : s.samples) {
    bool has_a = false, has_b = false;
    for (const std::string& f : st.frames) {
      has_a = has_a || absl::StrContains(f, a);
      has_b = has_b || absl::StrContains(f, b);
    }
    if (has_a && has_b) w += st.values[0];
  }
  return w;
}

absl::StatusOr<PprofSummary> Summarize(const std::string& body, const std::string& path) {
  std::ofstream(path, std::ios::binary) << body;
  return SummarizeProfile(path);
}

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("controller_e2e"); }
  void TearDown() override {
    if (HasFailure()) {
      if (agent_) printf("---- agent log ----\n%s\n", agent_->Log().c_str());
      if (target_) printf("---- controller log ----\n%s\n", target_->Log().c_str());
    } else {
      RunCommand(absl::StrCat("rm -rf '", dir_, "'"));
    }
  }
  std::string dir_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<Child> target_;
};

TEST_F(ControllerTest, CpuAndHeapMatchTheControllersOwnPprof) {
  const std::string version = GoVersions().back();
  // Dependencies come from the Go module proxy; if they cannot be fetched this fails saying so.
  ASSERT_OK_AND_ASSIGN(bin, BuildGoModule(version, TestDataDir() + "/targets/controller",
                                          kGoStrippedPie, dir_ + "/controller"));
  const int pprof_port = PickFreePort();
  ASSERT_OK_AND_ASSIGN(
      t, Child::Start({bin, absl::StrCat("-pprof-bind-address=127.0.0.1:", pprof_port)},
                      dir_ + "/controller.log"));
  target_ = std::move(t);
  bool ready = false;
  for (int i = 0; i < 300 && !ready; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    ready = absl::StrContains(target_->Log(), "ready");
  }
  ASSERT_TRUE(ready) << "the controller did not reconcile its objects:\n" << target_->Log();
  ASSERT_OK_AND_ASSIGN(a, Agent::Start({absl::StrCat("--target_pid=", target_->pid())}, dir_));
  agent_ = std::move(a);

  // The release the agent names is the toolchain's.
  ASSERT_OK_AND_ASSIGN(go, GoTool(version));
  const std::string want_version =
      std::string(absl::StripAsciiWhitespace(RunCommand(go + " env GOVERSION").output));
  ASSERT_OK_AND_ASSIGN(health, agent_->Get("/healthz"));
  EXPECT_TRUE(absl::StrContains(health.body, "go: " + want_version)) << health.body;
  EXPECT_FALSE(absl::StrContains(health.body, "unavailable: heap")) << health.body;
  EXPECT_FALSE(absl::StrContains(health.body, "unavailable: Go symbols")) << health.body;
  ASSERT_OK_AND_ASSIGN(metrics, agent_->Get("/metrics"));
  EXPECT_TRUE(absl::StrContains(metrics.body, absl::StrCat("go_version=\"", want_version, "\"")))
      << metrics.body;
  EXPECT_TRUE(absl::StrContains(metrics.body, "pprof_sidecar_target_heap_available 1"));

  // CPU: the same windows from both, at Go's rate, until both hold enough hashing samples
  // (2,000: a share near 0.8 has SD <= 0.0097; the difference of two such shares has SD 0.0137,
  // +-0.07 is 5 sigma).
  double ours_r = 0, ours_a = 0, own_r = 0, own_a = 0, rooted = 0, total = 0;
  for (int w = 0; w < kMaxWindows && std::min(ours_r + ours_a, own_r + own_a) < kMinSamples;
       ++w) {
    absl::StatusOr<HttpResponse> own;
    std::thread own_cpu([&] {
      own = HttpGet(pprof_port, absl::StrCat("/debug/pprof/profile?seconds=", kWindowSeconds),
                    absl::Seconds(kWindowSeconds + 30));
    });
    auto ours =
        FetchProfile(agent_->port(), kWindowSeconds, absl::StrCat(dir_, "/cpu", w, ".pb.gz"));
    own_cpu.join();
    ASSERT_TRUE(ours.ok()) << ours.status();
    ASSERT_TRUE(own.ok()) << own.status();
    ASSERT_EQ(own->status, 200) << own->body;
    ASSERT_OK_AND_ASSIGN(theirs, Summarize(own->body, absl::StrCat(dir_, "/own_cpu", w, ".pb.gz")));
    const PprofSummary& s = ours->summary;
    ours_r += WeightWith(s, kRender, kHash);
    ours_a += WeightWith(s, kAudit, kHash);
    own_r += WeightWith(theirs, kRender, kHash);
    own_a += WeightWith(theirs, kAudit, kHash);
    rooted += GoRootShare(s) * s.totals[0];
    total += s.totals[0];
    // The reconciler runs under controller-runtime's worker, as in Go's own profile.
    for (const PprofSummary* p : {&s, static_cast<const PprofSummary*>(&theirs)}) {
      EXPECT_GT(CumShare(*p, "processNextWorkItem"), 0.9 * CumShare(*p, kRender));
    }
  }
  const double our_split = ours_r / (ours_r + ours_a), own_split = own_r / (own_r + own_a);
  printf("controller go%s: render's share of the hashing: ours %.3f (%.0f samples) own %.3f "
         "(%.0f samples); "
         "%.2f%% of our %.0f samples rooted\n",
         version.c_str(), our_split, ours_r + ours_a, own_split, own_r + own_a,
         100 * rooted / total, total);
  ASSERT_GE(ours_r + ours_a, kMinSamples) << "too few reconciler samples";
  ASSERT_GE(own_r + own_a, kMinSamples);
  // The same split as Go's own profile of the same windows. The split itself is the workload's
  // (render hashes 3 times what audit does, yet took from 0.41 to 0.93 of the hashing time in
  // both profilers' views, with the machine's load): only both reconcilers being seen is asked.
  EXPECT_NEAR(our_split, own_split, 0.07);
  EXPECT_GT(our_split, 0.2);
  EXPECT_LT(our_split, 0.99);
  EXPECT_GE(rooted / total, 0.99);

  // Heap: the agent's profile and the controller's own between the same two GCs (two agent reads
  // that agree around Go's) are the same numbers.
  bool same = false;
  PprofSummary mine, go_heap;
  for (int attempt = 0; attempt < 10 && !same; ++attempt) {
    auto a1 = agent_->Get("/debug/pprof/heap");
    auto g = HttpGet(pprof_port, "/debug/pprof/heap");
    auto a2 = agent_->Get("/debug/pprof/heap");
    ASSERT_TRUE(a1.ok() && g.ok() && a2.ok());
    ASSERT_EQ(a1->status, 200) << a1->body;
    ASSERT_EQ(g->status, 200);
    ASSERT_OK_AND_ASSIGN(s1, Summarize(a1->body, dir_ + "/heap1.pb.gz"));
    ASSERT_OK_AND_ASSIGN(s2, Summarize(a2->body, dir_ + "/heap2.pb.gz"));
    ASSERT_OK_AND_ASSIGN(sg, Summarize(g->body, dir_ + "/own_heap.pb.gz"));
    same = s1.totals == s2.totals;
    mine = s1;
    go_heap = sg;
  }
  ASSERT_TRUE(same) << "a GC published a new heap profile during every attempt";
  ASSERT_EQ(mine.totals.size(), 4u);
  ASSERT_EQ(go_heap.totals.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(mine.totals[i], go_heap.totals[i]) << mine.sample_types[i].type;
  }
  printf("controller go%s heap: inuse_space %lld (own %lld), alloc_space %lld (own %lld)\n",
         version.c_str(), static_cast<long long>(mine.totals[3]),
         static_cast<long long>(go_heap.totals[3]), static_cast<long long>(mine.totals[1]),
         static_cast<long long>(go_heap.totals[1]));
  EXPECT_GT(mine.funcs.count(kRender), 0u) << mine.raw;
}

}  // namespace
}  // namespace pprof_sidecar::testing
