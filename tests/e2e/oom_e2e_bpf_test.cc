// The OOM flight recorder end to end (issue 16): the real agent binary, as in a pod (no tracefs,
// the chart's capabilities), next to targets that leak in a known function inside a memory cgroup
// the test creates, until the kernel OOM-kills them. The test starts the target again under the
// same name; the agent then serves snapshots of the previous process whose top inuse_space
// function (per `go tool pprof -top`) is the leaking one. Also the bounds: oscillating usage,
// full and read-only snapshot directories, partial files left by a killed agent.
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testutil/memory_cgroup.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

constexpr uint64_t kLimit = 64 << 20;

struct Snap {
  std::string name, reason, kind;
  int pid = 0;
  uint64_t usage = 0;
};

// The agent's JSON listing (one snapshot per line, as SnapshotsSource writes it).
std::vector<Snap> ListSnapshots(const Agent& a) {
  std::vector<Snap> out;
  auto r = a.Get("/debug/pprof/snapshots/?format=json");
  if (!r.ok() || r->status != 200) return out;
  const std::regex re(
      "\"name\":\"([^\"]+)\".*\"kind\":\"([^\"]+)\",\"reason\":\"([^\"]+)\".*\"pid\":([0-9]+)"
      ".*\"usage_bytes\":([0-9]+)");
  for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
    std::cmatch m;
    const std::string l(line);
    if (!std::regex_search(l.c_str(), m, re)) continue;
    Snap s{m[1], m[3], m[2]};
    absl::SimpleAtoi(m[4].str(), &s.pid);
    absl::SimpleAtoi(m[5].str(), &s.usage);
    out.push_back(s);
  }
  return out;
}

class OomE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("oom_e2e");
    snaps_ = dir_ + "/snapshots";
  }

  // The first function of `go tool pprof -top -sample_index=inuse_space URL`, as a user would
  // read it, with the whole output in `out`.
  std::string TopInuse(const Agent& a, const std::string& name, std::string* out) {
    const std::string version = GoVersions().back();
    auto go = GoTool(version);
    if (!go.ok()) return go.status().ToString();
    const std::string home = dir_ + "/home";
    mkdir(home.c_str(), 0700);
    CommandResult r = RunCommand(absl::StrCat(
        "HOME='", home, "' PPROF_TMPDIR='", home, "' GOCACHE='", GoCacheDir(version), "' ", *go,
        " tool pprof -top -sample_index=inuse_space 'http://127.0.0.1:", a.port(),
        "/debug/pprof/snapshots/", name, "' 2>&1"));
    *out = r.output;
    bool table = false;
    for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
      if (table) {
        std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
        return f.size() >= 6 ? std::string(f[5]) : "";
      }
      table = absl::StrContains(line, "flat%");
    }
    return "";
  }

  // Runs `target` in a cgroup limited to kLimit until the kernel OOM-kills it; returns its pid.
  void RunUntilOomKilled(MemoryCgroup& cg, const std::vector<std::string>& target, pid_t* pid) {
    ASSERT_OK_AND_ASSIGN(child, Child::Start(cg.Wrap(target), dir_ + "/target1.log"));
    *pid = child->pid();
    std::optional<int> st = child->WaitExit(absl::Seconds(40));
    ASSERT_TRUE(st.has_value()) << "not killed within 40 s";
    EXPECT_TRUE(WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL) << *st;
    EXPECT_GE(cg.OomKills(), 1u);
  }

  // The OOM-killed process's snapshots after the target was started again under the same name
  // (not leaking): thresholds in order, each with `leak_fn` on top.
  void CheckAfterRestart(Agent& agent, MemoryCgroup& cg, const std::vector<std::string>& again,
                         pid_t killed, const std::string& leak_fn) {
    ASSERT_OK_AND_ASSIGN(restarted, Child::Start(cg.Wrap(again), dir_ + "/target2.log"));
    const std::string want = absl::StrCat("target: pid ", restarted->pid());
    bool found = false;
    for (int i = 0; i < 100 && !found; ++i) {
      auto h = agent.Get("/healthz");
      found = h.ok() && absl::StrContains(h->body, want);
      if (!found) absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_TRUE(found) << agent.Log();
    std::vector<std::string> reasons;
    uint64_t last_usage = 0;
    bool at_kill = false;
    int goroutine_snaps = 0;
    for (const Snap& s : ListSnapshots(agent)) {
      ASSERT_EQ(s.pid, killed) << s.name;
      if (s.kind == "goroutine") {  // taken with the heap where the target is Go
        ++goroutine_snaps;
        continue;
      }
      EXPECT_EQ(s.kind, "heap");
      std::string out;
      EXPECT_EQ(TopInuse(agent, s.name, &out), leak_fn) << s.name << "\n" << out;
      printf("%s: top inuse_space %s\n", s.name.c_str(), leak_fn.c_str());
      if (s.reason == "oom-kill") {
        at_kill = true;
        continue;
      }
      EXPECT_GE(s.usage, last_usage);
      last_usage = s.usage;
      reasons.push_back(s.reason);
    }
    // 95 % may fall between two readings when the last step of the leak is large.
    ASSERT_GE(reasons.size(), 3u) << agent.Log();
    EXPECT_EQ(std::vector<std::string>(reasons.begin(), reasons.begin() + 3),
              (std::vector<std::string>{"50pct", "70pct", "85pct"}));
    const double live = Metric(agent, "pprof_sidecar_oom_kill_snapshots_total{result=\"saved\"}"),
                 recent = Metric(agent,
                                 "pprof_sidecar_oom_kill_snapshots_total{result=\"saved_recent\"}");
    printf("thresholds: %s; at-kill snapshot: %s\n", absl::StrJoin(reasons, ",").c_str(),
           live == 1     ? "read from the dying process"
           : recent == 1 ? "the process was gone: the last heap read near the limit"
                         : "none");
    // Either way there is one: the recorder reads the heap every second above 95 %.
    EXPECT_TRUE(at_kill) << agent.Log();
    // A Go target's threshold snapshots carry its goroutine profile too; a C target has none.
    const bool go = absl::StartsWith(leak_fn, "main.");
    printf("goroutine snapshots: %d\n", goroutine_snaps);
    if (go) {
      EXPECT_GE(goroutine_snaps, 3);
    } else {
      EXPECT_EQ(goroutine_snaps, 0);
    }
    EXPECT_EQ(Metric(agent, "pprof_sidecar_oom_kills_total"), 1) << agent.Log();
  }

  std::string dir_, snaps_;
};

class OomGoTest : public OomE2eTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(OomGoTest, SnapshotsOfTheKilledProcessAfterItsRestart) {
  ASSERT_OK_AND_ASSIGN(bin, BuildGoCached(GetParam(), TestDataDir() + "/targets/oom_go_leak", "",
                                          dir_ + "/oom_go_leak"));
  ASSERT_OK_AND_ASSIGN(cg, MemoryCgroup::Create(absl::StrCat("pprof_oom_go_", getpid()), kLimit));
  ASSERT_OK_AND_ASSIGN(agent, Agent::Start({"--target_name=oom_go_leak", "--snapshot_dir=" + snaps_,
                                            "--memory_watch_interval_ms=50"},
                                           dir_));
  pid_t killed = 0;
  ASSERT_NO_FATAL_FAILURE(RunUntilOomKilled(*cg, {bin, "16"}, &killed));
  CheckAfterRestart(*agent, *cg, {bin, "0"}, killed, "main.leakCacheEntry");
}

INSTANTIATE_TEST_SUITE_P(Toolchains, OomGoTest, ::testing::ValuesIn(OldestAndNewestGo()),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return GoVersionName(p.param);
                         });

// The malloc sampler's live set: uprobes need CAP_SYS_ADMIN on this kernel (Debian's
// perf_event_paranoid patch), which the chart does not grant yet; this agent gets it on top.
TEST_F(OomE2eTest, CTargetThroughTheMallocSampler) {
  ASSERT_OK_AND_ASSIGN(bin, BuildNative({TestDataDir() + "/targets/oom_c_leak/oom_c_leak.c"},
                                        "-O1 -g -fno-omit-frame-pointer", dir_ + "/oom_c_leak"));
  ASSERT_OK_AND_ASSIGN(cg, MemoryCgroup::Create(absl::StrCat("pprof_oom_c_", getpid()), kLimit));
  PodConditions pod;
  pod.caps = ChartCapabilities();
  pod.caps.push_back("SYS_ADMIN");
  ASSERT_OK_AND_ASSIGN(agent, Agent::Start({"--target_name=oom_c_leak", "--snapshot_dir=" + snaps_,
                                            "--memory_watch_interval_ms=50"},
                                           dir_, pod));
  pid_t killed = 0;
  ASSERT_NO_FATAL_FAILURE(RunUntilOomKilled(*cg, {bin, "16"}, &killed));
  CheckAfterRestart(*agent, *cg, {bin, "0"}, killed, "leak_cache_entry");
}

// ---- Bounds ----

// Usage flipping across the 50 % threshold every 50 ms for 3 s: one snapshot, not sixty.
TEST_F(OomE2eTest, OscillationAtAThresholdDoesNotFlood) {
  ASSERT_OK_AND_ASSIGN(bin, BuildNative({TestDataDir() + "/targets/oom_c_leak/oom_c_leak.c"},
                                        "-O1 -g -fno-omit-frame-pointer", dir_ + "/oom_c_leak"));
  ASSERT_OK_AND_ASSIGN(cg, MemoryCgroup::Create(absl::StrCat("pprof_oom_osc_", getpid()), kLimit));
  ASSERT_OK_AND_ASSIGN(agent,
                       Agent::Start({"--target_name=oom_c_leak", "--snapshot_dir=" + snaps_,
                                     "--memory_watch_interval_ms=20", "--malloc_profiling=false"},
                                    dir_));
  ASSERT_OK_AND_ASSIGN(target, Child::Start(cg->Wrap({bin, "osc", "20", "40"}), dir_ + "/t.log"));
  absl::SleepFor(absl::Seconds(3));
  const double polls_crossing = Metric(*agent, "pprof_sidecar_target_memory_usage_bytes");
  EXPECT_GT(polls_crossing, 0);
  auto snaps = ListSnapshots(*agent);
  // Heap of a C target without the malloc sampler cannot be captured: the attempt is what counts.
  auto m = agent->Get("/metrics");
  ASSERT_TRUE(m.ok());
  double attempts = 0;
  for (absl::string_view line : absl::StrSplit(m->body, '\n')) {
    double v;
    if (absl::ConsumePrefix(&line, "pprof_sidecar_snapshot") &&
        (absl::StrContains(line, "failures_total{") || absl::StrContains(line, "s_total{")) &&
        absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) {
      attempts += v;
    }
  }
  EXPECT_EQ(attempts, 1) << m->body;
  EXPECT_LE(snaps.size(), 1u);
}

// A full directory (a 4 KiB tmpfs) and a read-only one: reported in /healthz and /metrics, the
// agent keeps serving. The C target's heap must be captured for a write to be tried: SYS_ADMIN
// for the malloc sampler's uprobes, as in CTargetThroughTheMallocSampler.
TEST_F(OomE2eTest, FullAndReadOnlySnapshotDirectoriesAreReported) {
  ASSERT_OK_AND_ASSIGN(bin, BuildNative({TestDataDir() + "/targets/oom_c_leak/oom_c_leak.c"},
                                        "-O1 -g -fno-omit-frame-pointer", dir_ + "/oom_c_leak"));
  for (const bool read_only : {false, true}) {
    const char* opts = read_only ? "read-only" : "full (4 KiB)";
    SCOPED_TRACE(opts);
    const std::string d = absl::StrCat(dir_, "/mnt_", read_only ? "ro" : "full");
    mkdir(d.c_str(), 0755);
    ASSERT_EQ(mount("none", d.c_str(), "tmpfs", read_only ? MS_RDONLY : 0, "size=4k"), 0)
        << strerror(errno);
    ASSERT_OK_AND_ASSIGN(cg,
                         MemoryCgroup::Create(absl::StrCat("pprof_oom_full_", getpid()), kLimit));
    PodConditions pod;
    pod.caps = ChartCapabilities();
    pod.caps.push_back("SYS_ADMIN");
    ASSERT_OK_AND_ASSIGN(agent,
                         Agent::Start({"--target_name=oom_c_leak", "--snapshot_dir=" + d,
                                       "--memory_watch_interval_ms=20", "--heap_sample_bytes=4096",
                                       "--snapshot_thresholds=10,20,30,40"},
                                      dir_, pod));
    ASSERT_OK_AND_ASSIGN(target, Child::Start(cg->Wrap({bin, "osc", "1", "30"}), dir_ + "/t.log"));
    std::string health;
    for (int i = 0; i < 100 && !absl::StrContains(health, "cannot write"); ++i) {
      absl::SleepFor(absl::Milliseconds(50));
      auto h = agent->Get("/healthz");
      if (h.ok()) health = h->body;
    }
    EXPECT_TRUE(absl::StrContains(health, "snapshots: cannot write: snapshot directory " + d))
        << health << agent->Log();
    EXPECT_EQ(Metric(*agent, "pprof_sidecar_snapshot_dir_writable"), 0);
    EXPECT_EQ(agent->Get("/livez")->status, 200);
    EXPECT_EQ(agent->Get("/debug/pprof/snapshots/")->status, 200);
    printf("%s: %s", opts, health.c_str());
    agent.reset();
    target->Kill();
    umount2(d.c_str(), MNT_DETACH);
  }
}

// An agent killed mid-write left a temp file and a profile without metadata: the next agent
// deletes them at start and serves only the complete snapshot.
TEST_F(OomE2eTest, PartialFilesOfAKilledAgentAreCleanedAndNeverServed) {
  mkdir(snaps_.c_str(), 0750);
  const std::string good = "000001-20261207T000000Z-pid7-85pct-heap";
  std::ofstream(snaps_ + "/" + good + ".pb.gz") << "complete profile bytes";
  std::ofstream(snaps_ + "/" + good + ".meta")
      << "name=" << good
      << "\nkind=heap\nreason=85pct\ntime_unix_nanos=1796601600000000000\npid=7\n"
         "start_time=1\ncomm=x\nusage=1\nrss=1\nlimit=2\nbytes=22\nseq=1\n";
  std::ofstream(snaps_ + "/.tmp-000002-20261207T000001Z-pid7-95pct-heap.pb.gz") << "half a pro";
  std::ofstream(snaps_ + "/000003-20261207T000002Z-pid7-oom-kill-heap.pb.gz") << "no metadata";
  ASSERT_OK_AND_ASSIGN(agent, Agent::Start({"--snapshot_dir=" + snaps_}, dir_));
  auto list = ListSnapshots(*agent);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, good);
  EXPECT_EQ(agent->Get("/debug/pprof/snapshots/" + good)->body, "complete profile bytes");
  EXPECT_EQ(agent->Get("/debug/pprof/snapshots/000003-20261207T000002Z-pid7-oom-kill-heap")->status,
            404);
  CommandResult ls = RunCommand("ls -A " + snaps_);
  EXPECT_EQ(ls.output, good + ".meta\n" + good + ".pb.gz\n");
  auto html = agent->Get("/debug/pprof/snapshots/");
  EXPECT_TRUE(absl::StrContains(html->body, "<a href=\"" + good + "\">")) << html->body;
  EXPECT_EQ(html->content_type, "text/html; charset=utf-8");
  // Listed on the index page, as a directory.
  auto index = agent->Get("/debug/pprof/");
  EXPECT_TRUE(absl::StrContains(index->body, "href='snapshots/'")) << index->body;
  // Scripts: Accept: application/json.
  CommandResult curl = RunCommand(
      absl::StrCat("curl -s -H 'Accept: application/json' http://127.0.0.1:", agent->port(),
                   "/debug/pprof/snapshots/"));
  EXPECT_TRUE(absl::StartsWith(curl.output, "{\"snapshots\":[")) << curl.output;
  EXPECT_TRUE(absl::StrContains(curl.output, "\"reason\":\"85pct\"")) << curl.output;
}

}  // namespace
}  // namespace pprof_sidecar::testing
