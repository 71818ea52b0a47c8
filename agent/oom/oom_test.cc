// Unprivileged tests of the OOM flight recorder's pure parts: cgroup parsing over fixture trees
// (v1 and v2, the target's view and the agent's), the threshold policy, the snapshot store and
// the "snapshots" profile source.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/oom/flight_recorder.h"
#include "agent/oom/memory_watch.h"
#include "agent/oom/snapshot_store.h"
#include "agent/oom/snapshots_source.h"
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
  // A cgroup outside the reader's cgroup namespace (the agent's container has its own).
  r = ParseProcCgroup("0::/../cri-containerd-abc.scope\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->outside_namespace);
  EXPECT_FALSE(ParseProcCgroup("0::/a/../../etc\n").ok());  // ".." after a component
  EXPECT_FALSE(ParseProcCgroup("0::/a/./b\n").ok());
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

// cgroup v2 with a cgroup namespace per container (containerd's default): the agent sees the
// target's cgroup as "/../<sibling>"; only the target's own mount of its cgroup is used.
TEST(MemoryWatcher, V2SiblingOutsideTheAgentsNamespace) {
  FakeProc f("0::/../cri-containerd-abc.scope\n");
  WriteFile(f.TargetCg() + "/memory.max", "134217728\n");
  WriteFile(f.TargetCg() + "/memory.current", "1000\n");
  WriteFile(f.agent_cg + "/memory.max", "1\n");  // the agent's own: never used
  WriteFile(f.agent_cg + "/memory.current", "1\n");
  auto r = f.Read();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->limit, std::optional<uint64_t>(134217728));
  EXPECT_EQ(r->usage, 1000u);
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

// ---- Snapshot store ----

SnapshotMeta Meta(const std::string& reason, pid_t pid = 99) {
  SnapshotMeta m;
  m.kind = "heap";
  m.reason = reason;
  m.time = absl::FromUnixSeconds(1765000000);
  m.pid = pid;
  m.start_time = 12345;
  m.comm = "leaky <x>";
  m.usage = 60 << 20;
  m.rss = 50 << 20;
  m.limit = 100 << 20;
  return m;
}

std::string Ls(const std::string& dir) { return RunCommand("ls -A " + dir).output; }

TEST(SnapshotStore, WriteListReadAndReopen) {
  const std::string dir = MakeTempDir("oom_store") + "/snaps";
  auto s = SnapshotStore::Open({dir, 8, 1 << 20});
  ASSERT_TRUE(s.ok()) << s.status();
  auto w = (*s)->Write(Meta("50pct"), std::string(1000, 'a'));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->name, "000001-20251206T054640Z-pid99-50pct-heap");
  ASSERT_TRUE((*s)->Write(Meta("70pct"), std::string(2000, 'b')).ok());
  EXPECT_EQ(Ls(dir).find(".tmp-"), std::string::npos) << Ls(dir);
  EXPECT_EQ(*(*s)->Read(w->name), std::string(1000, 'a'));
  EXPECT_EQ((*s)->Read("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*s)->Read("../" + w->name).status().code(), absl::StatusCode::kNotFound);
  s->reset();
  auto again = SnapshotStore::Open({dir, 8, 1 << 20});
  ASSERT_TRUE(again.ok());
  auto list = (*again)->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].reason, "50pct");
  EXPECT_EQ(list[0].comm, "leaky <x>");
  EXPECT_EQ(list[0].limit, uint64_t{100} << 20);
  EXPECT_EQ(list[1].bytes, 2000u);
  EXPECT_EQ((*again)->Write(Meta("85pct"), "c")->seq, 3u);  // numbering continues
}

TEST(SnapshotStore, RingBoundedByCountAndBytes) {
  const std::string dir = MakeTempDir("oom_ring");
  auto s = SnapshotStore::Open({dir, 4, 10000});
  ASSERT_TRUE(s.ok());
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE((*s)->Write(Meta("interval"), std::string(1000, 'x')).ok());
  EXPECT_EQ((*s)->List().size(), 4u);
  EXPECT_EQ((*s)->List().front().seq, 17u);  // the newest kept
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*s)->Write(Meta("95pct"), std::string(4000, 'y')).ok());
  EXPECT_LE((*s)->stats().kept_bytes, 10000u);
  EXPECT_EQ((*s)->List().size(), 2u);
  EXPECT_EQ(RunCommand("ls " + dir + " | wc -l").output, "4\n");  // 2 profiles + 2 metadata
  // Larger than the whole budget: refused, counted, reported, the rest kept.
  auto big = (*s)->Write(Meta("95pct"), std::string(20000, 'z'));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE((*s)->health().ok());
  EXPECT_EQ((*s)->stats().write_failures, 1u);
  EXPECT_EQ((*s)->List().size(), 2u);
  ASSERT_TRUE((*s)->Write(Meta("95pct"), "ok").ok());
  EXPECT_TRUE((*s)->health().ok());
}

TEST(SnapshotStore, LeftoversOfAnInterruptedWriteAreCleanedAndNeverServed) {
  const std::string dir = MakeTempDir("oom_partial");
  {
    auto s = SnapshotStore::Open({dir, 8, 1 << 20});
    ASSERT_TRUE((*s)->Write(Meta("50pct"), "good").ok());
  }
  // Killed mid-write: a temp file, a profile whose metadata never came, and garbage metadata.
  WriteFile(dir + "/.tmp-000002-20251206T053320Z-pid99-70pct-heap.pb.gz", "half");
  WriteFile(dir + "/000003-20251206T053320Z-pid99-85pct-heap.pb.gz", "no metadata");
  WriteFile(dir + "/000004-x.meta", "name=000004-x\n");
  auto s = SnapshotStore::Open({dir, 8, 1 << 20});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->stats().cleaned_at_start, 3u);
  ASSERT_EQ((*s)->List().size(), 1u);
  EXPECT_EQ((*s)->List()[0].reason, "50pct");
  EXPECT_EQ(RunCommand("ls -A " + dir + " | wc -l").output, "2\n") << Ls(dir);
}

TEST(SnapshotStore, UnwritableDirectoryIsReportedNotFatal) {
  const std::string dir = MakeTempDir("oom_unwritable") + "/snaps";
  auto s = SnapshotStore::Open({dir, 8, 1 << 20});
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Write(Meta("50pct"), "kept").ok());
  // The directory is replaced by a file: every write now fails (ENOTDIR).
  RunCommand("mv " + dir + " " + dir + ".old && touch " + dir);
  auto w = (*s)->Write(Meta("70pct"), "lost");
  EXPECT_FALSE(w.ok());
  EXPECT_NE((*s)->health().message().find("snapshot directory"), std::string::npos);
  EXPECT_EQ((*s)->List().size(), 1u);
}

// ---- The recorder over a fake /proc, with a heap kind that answers from a counter ----

class CountingHeap : public ProfileSource {
 public:
  explicit CountingHeap(const std::string& name = "heap") { info_.name = name; }
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override {
    if (fail) return absl::NotFoundError("process gone");
    ProfileResponse r;
    r.body = absl::StrCat("heap of ", req.target->pid, " #", ++n);
    comments = req.comments;
    return r;
  }
  ProfileKindInfo info_;
  int n = 0;
  bool fail = false;
  std::vector<std::string> comments;
};

TEST(FlightRecorder, SnapshotsAtThresholdsThroughTheRegistryAndServesThem) {
  FakeProc f("0::/\n");
  WriteFile(f.TargetCg() + "/memory.max", "1000000\n");
  WriteFile(f.TargetCg() + "/memory.current", "100000\n");
  auto store = SnapshotStore::Open({MakeTempDir("oom_rec"), 16, 1 << 20});
  ASSERT_TRUE(store.ok());
  ProfileRegistry reg;
  auto heap = std::make_unique<CountingHeap>();
  CountingHeap* h = heap.get();
  ASSERT_TRUE(reg.Add(std::move(heap)).ok());
  ProcessInfo target;
  target.pid = 42;
  target.start_time = 7;
  target.comm = "leaky";
  FlightRecorderOptions o;
  o.watcher = {f.proc, f.agent_cg, 0};
  FlightRecorder rec(o, store->get(), &reg, [&] { return std::optional<ProcessInfo>(target); });
  int t = 0;
  for (int usage : {100000, 520000, 530000, 710000, 900000, 960000, 990000}) {
    WriteFile(f.TargetCg() + "/memory.current", absl::StrCat(usage, "\n"));
    rec.Poll(T(t++));
  }
  std::vector<std::string> reasons;
  for (const SnapshotMeta& m : (*store)->List()) reasons.push_back(m.reason);
  EXPECT_EQ(reasons, (std::vector<std::string>{"50pct", "70pct", "85pct", "95pct"}));
  EXPECT_EQ((*store)->List()[2].usage, 900000u);
  EXPECT_EQ((*store)->List()[2].limit, 1000000u);
  // From 10 points below the highest threshold the heap is also read into memory (at 90, 96 and
  // 99 %: 1 s apart).
  EXPECT_EQ(rec.stats().recent_reads, 3u);
  EXPECT_NE(h->comments.back().find("99.0 %"), std::string::npos) << h->comments.back();

  // The victim event for the target: one more capture; for another process: none.
  rec.OnOomVictim(42, 7);
  rec.OnOomVictim(43, 7);
  rec.OnOomVictim(42, 8);
  EXPECT_EQ((*store)->List().back().reason, "oom-kill");
  EXPECT_EQ(rec.stats().oom_events, 1u);
  EXPECT_EQ(rec.stats().oom_events_other, 2u);
  EXPECT_EQ(rec.stats().oom_snapshots, 1u);
  // The process is gone when the capture runs: the recent read (#7, at 99 %) is saved instead,
  // once; with none left, the at-kill snapshot fails.
  h->fail = true;
  rec.OnOomVictim(42, 7);
  EXPECT_EQ(rec.stats().oom_snapshots_recent, 1u);
  EXPECT_EQ((*store)->List().back().reason, "oom-kill");
  EXPECT_EQ(*(*store)->Read((*store)->List().back().name), "heap of 42 #7");
  EXPECT_EQ((*store)->List().back().usage, 990000u);
  rec.OnOomVictim(42, 7);
  EXPECT_EQ(rec.stats().oom_snapshot_failures, 1u);

  // Served by the snapshots kind: listing (HTML and JSON) and each profile.
  SnapshotsSource src(store->get(), &rec);
  EXPECT_FALSE(src.info().needs_target);
  EXPECT_TRUE(src.info().subpaths);
  ProfileRequest list;
  auto html = src.Collect(list);
  ASSERT_TRUE(html.ok());
  EXPECT_EQ(html->content_type, "text/html; charset=utf-8");
  const std::string first = (*store)->List()[0].name;
  EXPECT_NE(html->body.find("<a href=\"" + first + "\">"), std::string::npos) << html->body;
  list.accept = "application/json, text/plain";
  EXPECT_EQ(src.Collect(list)->content_type, "application/json");
  list.accept.clear();
  list.params["format"] = "json";
  auto json = src.Collect(list);
  ASSERT_TRUE(json.ok());
  // Valid JSON (comm with '<' and '"'-free names, escaped), parsed by a real JSON parser.
  const nlohmann::json parsed = nlohmann::json::parse(json->body, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << json->body;
  ASSERT_EQ(parsed["snapshots"].size(), 6u);
  EXPECT_EQ(parsed["snapshots"][5]["reason"], "oom-kill");
  EXPECT_EQ(parsed["snapshots"][0]["url"], "/debug/pprof/snapshots/" + first);
  EXPECT_EQ(parsed["snapshots"][0]["comm"], "leaky");
  EXPECT_EQ(parsed["snapshots"][2]["usage_bytes"], 900000);
  EXPECT_TRUE(parsed["write_error"].is_null());
  ProfileRequest get;
  get.subpath = first;
  EXPECT_EQ(src.Collect(get)->body, "heap of 42 #1");
  get.subpath = "missing";
  EXPECT_EQ(src.Collect(get).status().code(), absl::StatusCode::kNotFound);
  MetricsWriter mw;
  src.WriteMetrics(std::nullopt, &mw);
  EXPECT_NE(mw.text().find("pprof_sidecar_snapshots_total{reason=\"85pct\"} 1"), std::string::npos)
      << mw.text();
  EXPECT_NE(mw.text().find("pprof_sidecar_oom_kill_snapshots_total{result=\"failed\"} 1"),
            std::string::npos);
  EXPECT_NE(src.HealthLines(std::nullopt).find("snapshots: 6 kept"), std::string::npos)
      << src.HealthLines(std::nullopt);
}

// Once a "goroutine" kind is registered, each snapshot carries it too (same reason, same time).
TEST(FlightRecorder, GoroutineProfileWhenTheKindExists) {
  FakeProc f("0::/\n");
  WriteFile(f.TargetCg() + "/memory.max", "1000\n");
  WriteFile(f.TargetCg() + "/memory.current", "600\n");
  auto store = SnapshotStore::Open({MakeTempDir("oom_gr"), 16, 1 << 20});
  ProfileRegistry reg;
  ASSERT_TRUE(reg.Add(std::make_unique<CountingHeap>()).ok());
  ASSERT_TRUE(reg.Add(std::make_unique<CountingHeap>("goroutine")).ok());
  ProcessInfo target;
  target.pid = 42;
  FlightRecorderOptions o;
  o.watcher = {f.proc, f.agent_cg, 0};
  FlightRecorder rec(o, store->get(), &reg, [&] { return std::optional<ProcessInfo>(target); });
  rec.Poll(T(0));
  auto list = (*store)->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].kind, "heap");
  EXPECT_EQ(list[1].kind, "goroutine");
  EXPECT_EQ(list[1].reason, "50pct");
  EXPECT_EQ(list[0].time, list[1].time);
  EXPECT_TRUE(absl::EndsWith(list[1].name, "-50pct-goroutine")) << list[1].name;
}

// The agent restarts while its target lives on: thresholds already snapshotted for that process
// (found in the store) do not fire again; the ones above do; another process starts afresh.
TEST(FlightRecorder, AnAgentRestartDoesNotRepeatTheSameProcessesThresholds) {
  FakeProc f("0::/\n");
  WriteFile(f.TargetCg() + "/memory.max", "1000\n");
  const std::string dir = MakeTempDir("oom_restart");
  ProfileRegistry reg;
  ASSERT_TRUE(reg.Add(std::make_unique<CountingHeap>()).ok());
  ProcessInfo target;
  target.pid = 42;
  target.start_time = 7;
  FlightRecorderOptions o;
  o.watcher = {f.proc, f.agent_cg, 0};
  auto run = [&](int usage, int at) {
    auto store = SnapshotStore::Open({dir, 16, 1 << 20});
    FlightRecorder rec(o, store->get(), &reg, [&] { return std::optional<ProcessInfo>(target); });
    WriteFile(f.TargetCg() + "/memory.current", absl::StrCat(usage, "\n"));
    rec.Poll(T(at));
    std::vector<std::string> r;
    for (const SnapshotMeta& m : (*store)->List()) r.push_back(m.reason);
    return r;
  };
  EXPECT_EQ(run(720, 0), (std::vector<std::string>{"70pct"}));
  EXPECT_EQ(run(730, 1), (std::vector<std::string>{"70pct"}));  // restarted agent: nothing new
  EXPECT_EQ(run(860, 2), (std::vector<std::string>{"70pct", "85pct"}));
  target.start_time = 8;  // the target restarted
  EXPECT_EQ(run(730, 3), (std::vector<std::string>{"70pct", "85pct", "70pct"}));
}

TEST(FlightRecorder, NoHeapKindIsACountedFailureNotACrash) {
  FakeProc f("0::/\n");
  WriteFile(f.TargetCg() + "/memory.max", "1000\n");
  WriteFile(f.TargetCg() + "/memory.current", "990\n");
  auto store = SnapshotStore::Open({MakeTempDir("oom_noheap"), 16, 1 << 20});
  ProfileRegistry reg;
  ProcessInfo target;
  target.pid = 42;
  FlightRecorderOptions o;
  o.watcher = {f.proc, f.agent_cg, 0};
  FlightRecorder rec(o, store->get(), &reg, [&] { return std::optional<ProcessInfo>(target); });
  rec.Poll(T(0));
  EXPECT_TRUE((*store)->List().empty());
  EXPECT_EQ(rec.stats().capture_failures, (std::map<std::string, uint64_t>{{"heap_collect", 1}}));
}

}  // namespace
}  // namespace pprof_sidecar
