// pprof labels on CPU samples (issue 15), against the real agent binary: a Go target built in the
// test burns CPU under labels (tests/targets/go_labels: worker=a and worker=b at 1:3, both under
// job=burn) while the agent and the target's own /debug/pprof/profile profile it over the same
// seconds. The agent's profile must carry the same label keys and values with the same shares,
// and `go tool pprof -tagfocus` must select by them. Go 1.24+ keep a label set as a sorted slice,
// Go 1.19..1.23 as a map: one release of each.
#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

using LabelCounts = std::map<std::pair<std::string, std::string>, int64_t>;

std::string Describe(const LabelCounts& l, int64_t total) {
  std::string s;
  for (const auto& [kv, n] : l) absl::StrAppend(&s, kv.first, "=", kv.second, ": ", n, ", ");
  return absl::StrCat(s, "total ", total);
}

class LabelsE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { dir_ = MakeTempDir("labels_e2e"); }
  void TearDown() override {
    if (HasFailure() && agent_) printf("---- agent log ----\n%s\n", agent_->Log().c_str());
    if (!HasFailure()) RunCommand(absl::StrCat("rm -rf '", dir_, "'"));
  }
  // `go tool pprof -top -tagfocus=<focus>` of the profile at `path`.
  CommandResult TopFocused(const std::string& path, const std::string& focus) {
    const std::string version = GoVersions().back();
    const std::string home = dir_ + "/home", tmp = dir_ + "/pproftmp";
    mkdir(home.c_str(), 0700);
    mkdir(tmp.c_str(), 0700);
    absl::StatusOr<std::string> go = GoTool(version);
    if (!go.ok()) return {-1, std::string(go.status().message())};
    return RunCommand(absl::StrCat(
        "HOME='", home, "' PPROF_TMPDIR='", tmp, "' PPROF_BINARY_PATH=/nonexistent GOCACHE='",
        GoCacheDir(version), "' ", *go, " tool pprof -top -tagfocus=", focus, " '", path, "'"));
  }

  std::string dir_;
  std::unique_ptr<Agent> agent_;
};

TEST_P(LabelsE2eTest, CpuSamplesCarryTheGoroutinesLabelsAsGosOwnProfile) {
  const std::string version = GetParam();
  ASSERT_OK_AND_ASSIGN(
      bin, BuildGoCached(version, TestDataDir() + "/targets/go_labels", "", dir_ + "/go_labels"));
  ASSERT_OK_AND_ASSIGN(target, Child::Start({bin, "-goroutines=1"}, dir_ + "/target.log"));
  const int port = TargetPort(dir_ + "/target.log");
  ASSERT_GT(port, 0);
  ASSERT_OK_AND_ASSIGN(agent, Agent::Start({absl::StrCat("--target_pid=", target->pid())}, dir_));
  agent_ = std::move(agent);
  // The agent learns the target's layout when it adopts it (on its tracker's worker thread):
  // short windows until its samples carry labels.
  bool labelled = false;
  for (int i = 0; i < 10 && !labelled; ++i) {
    ASSERT_OK_AND_ASSIGN(warm, FetchProfile(agent_->port(), 1, dir_ + "/warm.pb.gz"));
    labelled = !warm.summary.labels.empty();
  }
  ASSERT_TRUE(labelled) << "no labelled sample in 10 one-second windows";
  // Both profiles over the same 5 s.
  auto own_f = std::async(std::launch::async, [&] {
    return HttpGet(port, "/debug/pprof/profile?seconds=5", absl::Seconds(30));
  });
  ASSERT_OK_AND_ASSIGN(ours, FetchProfile(agent_->port(), 5, dir_ + "/agent.pb.gz"));
  auto own_r = own_f.get();
  ASSERT_TRUE(own_r.ok() && own_r->status == 200) << own_r.status();
  const std::string own_path = dir_ + "/own.pb.gz";
  std::ofstream(own_path) << own_r->body;
  ASSERT_OK_AND_ASSIGN(own, SummarizeProfile(own_path));

  const LabelCounts& a = ours.summary.labels;
  const LabelCounts& g = own.labels;
  const int64_t a_total = ours.summary.totals[0], g_total = own.totals[0];
  printf("go%s agent: %s\n", version.c_str(), Describe(a, a_total).c_str());
  printf("go%s Go's own: %s\n", version.c_str(), Describe(g, g_total).c_str());
  std::set<std::pair<std::string, std::string>> a_keys, g_keys;
  for (const auto& [kv, n] : a) a_keys.insert(kv);
  for (const auto& [kv, n] : g) g_keys.insert(kv);
  const std::set<std::pair<std::string, std::string>> want = {
      {"job", "burn"}, {"worker", "a"}, {"worker", "b"}};
  EXPECT_EQ(a_keys, want);
  EXPECT_EQ(g_keys, want);
  ASSERT_GE(a_total, 100) << "too few samples";
  ASSERT_GE(g_total, 100) << "too few samples";
  // Shares are binomial: each bound is 5 sigma of the difference of two estimates.
  auto share = [](const LabelCounts& l, const std::string& k, const std::string& v, int64_t n) {
    auto it = l.find({k, v});
    return it == l.end() ? 0.0 : static_cast<double>(it->second) / static_cast<double>(n);
  };
  auto sigma = [](double p, double q, int64_t n, int64_t m) {
    return std::sqrt(p * (1 - p) / static_cast<double>(n) + q * (1 - q) / static_cast<double>(m));
  };
  for (const auto& [k, v] : want) {
    const double p = share(a, k, v, a_total), q = share(g, k, v, g_total);
    EXPECT_NEAR(p, q, 5 * sigma(p, q, a_total, g_total) + 0.01) << k << "=" << v;
  }
  // worker=a among the labelled worker samples: 1 unit of work in 4.
  const double pa = share(a, "worker", "a", a_total) /
                    (share(a, "worker", "a", a_total) + share(a, "worker", "b", a_total));
  EXPECT_NEAR(pa, 0.25, 0.1);

  // -tagfocus selects by the agent's labels.
  CommandResult fa = TopFocused(ours.path, "worker=a");
  ASSERT_EQ(fa.exit_code, 0) << fa.output;
  EXPECT_TRUE(absl::StrContains(fa.output, "main.burnA")) << fa.output;
  EXPECT_FALSE(absl::StrContains(fa.output, "main.burnB")) << fa.output;
  CommandResult fb = TopFocused(ours.path, "worker=b");
  ASSERT_EQ(fb.exit_code, 0) << fb.output;
  EXPECT_TRUE(absl::StrContains(fb.output, "main.burnB")) << fb.output;
  EXPECT_FALSE(absl::StrContains(fb.output, "main.burnA")) << fb.output;
}

// 1.23: labels in a Go map; the newest: a sorted slice (1.24+).
INSTANTIATE_TEST_SUITE_P(GoReleases, LabelsE2eTest,
                         ::testing::Values(std::string("1.23"), GoVersions().back()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return GoVersionName(i.param);
                         });

}  // namespace
}  // namespace pprof_sidecar::testing
