// Unprivileged tests of the OOM flight recorder's pure parts: cgroup parsing over fixture trees
// (v1 and v2, the target's view and the agent's), the threshold policy, the snapshot store and
// the "snapshots" profile source.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/oom/memory_watch.h"
#include "agent/oom/threshold_policy.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;

void WriteFile(const std::string& path, const std::string& text) {
  RunCommand(absl::StrCat("mkdir -p \"$(dirname '", path, "')\""));
  std::ofstream(path) << text;
}

TEST(ParseProcCgroup, V1MemoryLineWinsOverV2) {
  auto r = ParseProcCgroup("12:pids:/a\n4:memory:/kubepods/burstable/pod1/c1\n0::/x\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->v2);
  EXPECT_EQ(r->path, "/kubepods/burstable/pod1/c1");
  r = ParseProcCgroup("5:cpu,memory:/co\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->path, "/co");
}

TEST(ParseProcCgroup, V2AndErrors) {
  auto r = ParseProcCgroup("0::/kubepods.slice/c1.scope\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->v2);
  EXPECT_EQ(r->path, "/kubepods.slice/c1.scope");
  EXPECT_EQ(ParseProcCgroup("1:name=systemd:/\n3:cpu:/\n").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(ParseProcCgroup("0::/../etc\n").ok());  // never a path leading upwards
  EXPECT_FALSE(ParseProcCgroup("").ok());
}

TEST(ParseMemoryLimit, MaxAndHugeMeanNoLimit) {
  EXPECT_EQ(*ParseMemoryLimit("max\n"), std::nullopt);
  EXPECT_EQ(*ParseMemoryLimit("9223372036854771712\n"), std::nullopt);  // v1 unlimited
  EXPECT_EQ(*ParseMemoryLimit("134217728\n"), std::optional<uint64_t>(134217728));
  EXPECT_FALSE(ParseMemoryLimit("12k").ok());
  EXPECT_EQ(*ParseMemoryUsage("4096\n"), 4096u);
  EXPECT_FALSE(ParseMemoryUsage("").ok());
}

// A fake /proc with one process (pid 42): statm, cgroup, and its root directory.
struct FakeProc {
  std::string proc, agent_cg;
  explicit FakeProc(const std::string& cgroup) {
    const std::string d = MakeTempDir("oom_fixture");
    proc = d + "/proc";
    agent_cg = d + "/agent_cgroup";
    WriteFile(proc + "/42/statm", "1000 300 100 10 0 200 0\n");
    WriteFile(proc + "/42/cgroup", cgroup);
    RunCommand(absl::StrCat("mkdir -p ", proc, "/42/root/sys/fs/cgroup ", agent_cg));
  }
  std::string TargetCg() const { return proc + "/42/root/sys/fs/cgroup"; }
  absl::StatusOr<MemoryReading> Read(uint64_t flag_limit = 0) const {
    MemoryWatcher w({proc, agent_cg, flag_limit});
    return w.Read(42, 7);
  }
};

const uint64_t kPage = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

TEST(MemoryWatcher, V2NamespacedCgroupAtTheTargetsMountRoot) {
  FakeProc f("0::/\n");
  WriteFile(f.TargetCg() + "/memory.max", "268435456\n");
  WriteFile(f.TargetCg() + "/memory.current", "100000000\n");
  auto r = f.Read();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->limit, std::optional<uint64_t>(268435456));
  EXPECT_EQ(r->usage, 100000000u);
  EXPECT_TRUE(r->usage_from_cgroup);
  EXPECT_EQ(r->rss, 300 * kPage);
  EXPECT_NE(r->limit_source.find("cgroup v2"), std::string::npos) << r->limit_source;
}

TEST(MemoryWatcher, V2PathInTheAgentsViewWhenTheTargetHasNone) {
  FakeProc f("0::/kubepods/pod1/c1\n");
  WriteFile(f.agent_cg + "/kubepods/pod1/c1/memory.max", "max\n");
  WriteFile(f.agent_cg + "/kubepods/pod1/c1/memory.current", "5000\n");
  auto r = f.Read(64 << 20);  // no cgroup limit: the flag's
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->usage, 5000u);
  EXPECT_EQ(r->limit, std::optional<uint64_t>(64 << 20));
  EXPECT_EQ(r->limit_source, "flag");
}

TEST(MemoryWatcher, V1PathInTheTargetsViewBeforeItsMountRoot) {
  FakeProc f("4:memory:/kubepods/c1\n0::/\n");
  WriteFile(f.TargetCg() + "/memory/memory.limit_in_bytes", "9223372036854771712\n");
  WriteFile(f.TargetCg() + "/memory/memory.usage_in_bytes", "1\n");
  WriteFile(f.TargetCg() + "/memory/kubepods/c1/memory.limit_in_bytes", "134217728\n");
  WriteFile(f.TargetCg() + "/memory/kubepods/c1/memory.usage_in_bytes", "67108864\n");
  auto r = f.Read();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->limit, std::optional<uint64_t>(134217728));
  EXPECT_EQ(r->usage, 67108864u);
  // Re-read: the open files give the new values.
  MemoryWatcher w({f.proc, f.agent_cg, 0});
  ASSERT_TRUE(w.Read(42, 7).ok());
  WriteFile(f.TargetCg() + "/memory/kubepods/c1/memory.usage_in_bytes", "70000000\n");
  EXPECT_EQ(w.Read(42, 7)->usage, 70000000u);
}

TEST(MemoryWatcher, SymlinksInTheTargetsTreeStayInsideIt) {
  FakeProc f("0::/\n");
  // An absolute symlink planted by the target resolves inside its root, not the agent's.
  WriteFile(f.agent_cg + "/secret", "1\n");
  ASSERT_EQ(symlink((f.agent_cg + "/secret").c_str(), (f.TargetCg() + "/memory.max").c_str()), 0);
  WriteFile(f.TargetCg() + "/memory.current", "5\n");
  auto r = f.Read();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->usage_from_cgroup);
  EXPECT_EQ(r->limit, std::nullopt);
  EXPECT_EQ(r->usage, 300 * kPage);  // RSS
}

TEST(MemoryWatcher, NoCgroupFilesRssAndFlag) {
  FakeProc f("garbage\n");
  auto r = f.Read(1 << 30);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->usage, 300 * kPage);
  EXPECT_EQ(r->limit, std::optional<uint64_t>(1 << 30));
  MemoryWatcher w({f.proc, f.agent_cg, 0});
  EXPECT_EQ(w.Read(43, 1).status().code(), absl::StatusCode::kNotFound);
}

TEST(MemoryWatcher, ThisProcessOnThisMachine) {
  MemoryWatcher w({});
  auto r = w.Read(getpid(), 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->rss, 1u << 20);
  EXPECT_TRUE(r->usage_from_cgroup) << "this machine has a memory cgroup (v1)";
  EXPECT_GE(r->usage, r->rss / 2);
}

// ---- Threshold policy ----

absl::Time T(int s) { return absl::FromUnixSeconds(1000000 + s); }

TEST(ThresholdPolicy, FiresEachThresholdOnceAsUsageGrows) {
  ThresholdPolicy p({});
  std::vector<std::string> fired;
  for (int pct = 0; pct <= 100; ++pct) {
    if (auto t = p.Observe(10, 1, pct, 100, T(pct))) fired.push_back(t->reason);
  }
  EXPECT_EQ(fired, (std::vector<std::string>{"50pct", "70pct", "85pct", "95pct"}));
}

TEST(ThresholdPolicy, AJumpFiresOnlyTheHighest) {
  ThresholdPolicy p({});
  EXPECT_FALSE(p.Observe(10, 1, 10, 100, T(0)));
  auto t = p.Observe(10, 1, 90, 100, T(1));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->percent, 85);
  EXPECT_FALSE(p.Observe(10, 1, 91, 100, T(2)));
  EXPECT_EQ(p.Observe(10, 1, 96, 100, T(3))->percent, 95);
}

TEST(ThresholdPolicy, OscillationFiresAtMostOncePerRearmPeriod) {
  ThresholdPolicy p({});
  int fired = 0;
  // One hour of usage flipping 49% <-> 51% every 100 ms... and 40% <-> 60% (past the gap).
  for (int i = 0; i < 36000; ++i) {
    const absl::Time now = absl::FromUnixMillis(int64_t{1000000000} + i * 100);
    fired += p.Observe(10, 1, i % 2 ? 51 : 49, 100, now).has_value();
    fired += p.Observe(10, 1, i % 2 ? 60 : 40, 100, now + absl::Milliseconds(50)).has_value();
  }
  EXPECT_LE(fired, 61);  // the first, then at most one per minute
  EXPECT_GE(fired, 59);
}

TEST(ThresholdPolicy, ANewProcessRearmsEverything) {
  ThresholdPolicy p({});
  EXPECT_EQ(p.Observe(10, 1, 99, 100, T(0))->percent, 95);
  EXPECT_FALSE(p.Observe(10, 1, 99, 100, T(1)));
  EXPECT_EQ(p.Observe(11, 2, 60, 100, T(2))->percent, 50);  // restarted: new pid
  EXPECT_EQ(p.Observe(11, 3, 60, 100, T(3))->percent, 50);  // same pid, new start time
}

TEST(ThresholdPolicy, NoLimitNoThresholdsButInterval) {
  ThresholdPolicyOptions o;
  o.interval = absl::Seconds(10);
  ThresholdPolicy p(o);
  EXPECT_FALSE(p.Observe(10, 1, 1 << 30, std::nullopt, T(0)));
  EXPECT_FALSE(p.Observe(10, 1, 1 << 30, std::nullopt, T(9)));
  EXPECT_EQ(p.Observe(10, 1, 1 << 30, std::nullopt, T(10))->reason, "interval");
  EXPECT_FALSE(p.Observe(10, 1, 1 << 30, std::nullopt, T(11)));
}

TEST(ParseThresholds, Validation) {
  EXPECT_EQ(*ParseThresholds("50,70,85,95"), (std::vector<int>{50, 70, 85, 95}));
  EXPECT_TRUE(ParseThresholds("")->empty());
  EXPECT_FALSE(ParseThresholds("70,50").ok());
  EXPECT_FALSE(ParseThresholds("0").ok());
  EXPECT_FALSE(ParseThresholds("101").ok());
  EXPECT_FALSE(ParseThresholds("5x").ok());
}

}  // namespace
}  // namespace pprof_sidecar
