// End-to-end: real Go targets built from source (every Go version, once stripped, once PIE)
// allocate 3 bytes at main.bigSite for every byte at main.smallSite, keep a known number of
// objects of each site live, and serve their own net/http/pprof. The agent's heap profile is
// compared with the target's own /debug/pprof/heap fetched in the same moment.
#include "agent/heap/heap_profiler.h"

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/server/pprof_server.h"
#include "agent/target/target_discovery.h"
#include "agent/testing/fake_cpu_sampler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::GoVersions;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::PprofSummary;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::SummarizeProfile;
using ::pprof_sidecar::testing::TestDataDir;

// MemProfileRate the target sets: 86 % of the 8 KiB objects sampled, so the split and the
// inuse per site (512 live objects) are measured over hundreds of samples (SD <= 2 %).
constexpr int kRate = 4096;
constexpr int kSize = 8192;  // object size at both sites
constexpr int kKeep = 512;   // live objects per site

// A started target; killed on destruction. `port` is what it printed ("port=N"), if anything.
struct Target {
  pid_t pid = -1;
  int port = 0;
  ~Target() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

std::unique_ptr<Target> Start(const std::string& bin, const std::vector<std::string>& args,
                              bool wait_port = true) {
  int fds[2];
  if (pipe(fds) != 0) return nullptr;
  auto t = std::make_unique<Target>();
  t->pid = fork();
  if (t->pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    std::vector<char*> argv{const_cast<char*>(bin.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  if (wait_port) {
    std::string line;
    char c;
    while (read(fds[0], &c, 1) == 1 && c != '\n') line += c;
    if (absl::StartsWith(line, "port=")) absl::SimpleAtoi(line.substr(5), &t->port);
  }
  close(fds[0]);
  return t;
}

std::string WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
  return path;
}

int64_t Flat(const PprofSummary& s, const std::string& fn, int index) {
  auto it = s.funcs.find(fn);
  return it == s.funcs.end() ? 0 : it->second.flat[index];
}

int Index(const PprofSummary& s, const std::string& type) {
  for (size_t i = 0; i < s.sample_types.size(); ++i) {
    if (s.sample_types[i].type == type) return static_cast<int>(i);
  }
  return -1;
}

class HeapGoTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(HeapGoTest, MatchesTheTargetsOwnHeapProfile) {
  const auto& [version, variant] = GetParam();
  const std::string dir = MakeTempDir("heap_go");
  std::string flags = variant == "stripped" ? "'-ldflags=-s -w'"
                      : variant == "pie"    ? "-buildmode=pie"
                                            : "";
  auto bin = BuildGo(version, TestDataDir() + "/targets/heap_go_split", flags, dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto target = Start(*bin, {absl::StrCat("-rate=", kRate), absl::StrCat("-size=", kSize),
                             absl::StrCat("-keep=", kKeep), "-mb_per_sec=16"});
  ASSERT_GT(target->port, 0);
  // Let it allocate and run several GCs.
  std::this_thread::sleep_for(std::chrono::seconds(3));

  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  HeapRequest req;
  httplib::Client cli("127.0.0.1", target->port);
  // "The same moment": both reads between the same two GCs (the published heap profile only
  // changes when a GC completes), checked with the heap profile cycle before and after.
  absl::StatusOr<std::string> ours;
  int go_status = 0;
  std::string go_body;
  for (int attempt = 0; attempt < 10; ++attempt) {
    auto before = heap.ReadGoSnapshot(target->pid);
    ASSERT_TRUE(before.ok()) << before.status();
    ours = heap.Collect(target->pid, req);
    auto res = cli.Get("/debug/pprof/heap");
    go_status = res ? res->status : -1;
    go_body = res ? res->body : "";
    auto after = heap.ReadGoSnapshot(target->pid);
    ASSERT_TRUE(after.ok()) << after.status();
    if (before->cycle == after->cycle) break;
  }
  ASSERT_TRUE(ours.ok()) << ours.status();
  ASSERT_EQ(go_status, 200);

  auto s = SummarizeProfile(WriteFile(dir + "/ours.pb.gz", *ours));
  ASSERT_TRUE(s.ok()) << s.status();
  auto g = SummarizeProfile(WriteFile(dir + "/go.pb.gz", go_body));
  ASSERT_TRUE(g.ok()) << g.status();

  // Shape exactly as runtime/pprof writes it.
  ASSERT_EQ(s->sample_types.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(s->sample_types[i].type, g->sample_types[i].type);
    EXPECT_EQ(s->sample_types[i].unit, g->sample_types[i].unit);
  }
  EXPECT_EQ(s->period_type.type, "space");
  EXPECT_EQ(s->period_type.unit, "bytes");
  EXPECT_EQ(s->period, kRate);
  EXPECT_EQ(s->period, g->period);
  EXPECT_EQ(s->default_sample_type, g->default_sample_type);

  const int alloc = Index(*s, "alloc_space"), inuse = Index(*s, "inuse_space");
  ASSERT_GE(alloc, 0);
  ASSERT_GE(inuse, 0);
  // The allocation sites are leaves once runtime frames are hidden; 3:1 within 5 pp.
  const double big = Flat(*s, "main.bigSite", alloc), small = Flat(*s, "main.smallSite", alloc);
  ASSERT_GT(big + small, 0) << s->raw;
  EXPECT_NEAR(big / (big + small), 0.75, 0.05);
  // Same numbers as the target's own profile (same counters; a GC in between may move them).
  EXPECT_NEAR(big, Flat(*g, "main.bigSite", alloc), 0.10 * big);
  // inuse_space total within 10% of Go's own.
  ASSERT_GT(g->totals[inuse], 0);
  EXPECT_NEAR(static_cast<double>(s->totals[inuse]), static_cast<double>(g->totals[inuse]),
              0.10 * g->totals[inuse]);
  // The known live share: kKeep objects per site (sampling noise and floating garbage: 30%).
  const double live = static_cast<double>(kKeep) * kSize;
  EXPECT_NEAR(Flat(*s, "main.bigSite", inuse), live, 0.30 * live);
  EXPECT_NEAR(Flat(*s, "main.smallSite", inuse), live, 0.30 * live);
  // No runtime frame above the user's allocation site.
  for (const auto& st : s->samples) {
    if (!st.frames.empty() && absl::StrContains(st.frames[0], "Site")) {
      EXPECT_THAT(st.frames[0], ::testing::StartsWith("main."));
      EXPECT_THAT(st.frames, ::testing::Contains("main.main"));
    }
  }

  // go tool pprof reads it and lists the sites.
  auto top = RunCommand(absl::StrCat("/usr/lib/go-", version,
                                     "/bin/go tool pprof -top -sample_index=alloc_space '", dir,
                                     "/ours.pb.gz' 2>&1"));
  EXPECT_EQ(top.exit_code, 0) << top.output;
  EXPECT_THAT(top.output, ::testing::HasSubstr("main.bigSite"));
  EXPECT_THAT(top.output, ::testing::HasSubstr("main.smallSite"));

  // allocs: same data, default sample type alloc_space.
  req.kind = HeapProfileKind::kAllocs;
  auto allocs = heap.Collect(target->pid, req);
  ASSERT_TRUE(allocs.ok()) << allocs.status();
  auto a = SummarizeProfile(WriteFile(dir + "/allocs.pb.gz", *allocs));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->default_sample_type, "alloc_space");

  // Delta over 2 s: only what was allocated in the window, still 3:1.
  req.kind = HeapProfileKind::kAllocs;
  req.delta = absl::Seconds(2);
  auto delta = heap.Collect(target->pid, req);
  ASSERT_TRUE(delta.ok()) << delta.status();
  auto d = SummarizeProfile(WriteFile(dir + "/delta.pb.gz", *delta));
  ASSERT_TRUE(d.ok()) << d.status();
  const double dbig = Flat(*d, "main.bigSite", alloc), dsmall = Flat(*d, "main.smallSite", alloc);
  ASSERT_GT(dbig + dsmall, 0) << d->raw;
  EXPECT_NEAR(dbig / (dbig + dsmall), 0.75, 0.05);
  EXPECT_LT(dbig, Flat(*a, "main.bigSite", alloc) + Flat(*s, "main.bigSite", alloc));
  EXPECT_GE(d->duration_nanos, 2000000000);

  HeapProfilerStats st = heap.stats();
  EXPECT_GE(st.profiles, 3u);
  EXPECT_EQ(st.errors, 0u);
  EXPECT_EQ(variant == "stripped" ? st.located_by_code : st.located_by_symtab, 1u);
  fprintf(stderr, "go%s %s: %lu buckets read in %ld us\n", version.c_str(), variant.c_str(),
          static_cast<unsigned long>(st.last_buckets), static_cast<long>(st.last_read_micros));
}

std::vector<std::tuple<std::string, std::string>> Params() {
  std::vector<std::tuple<std::string, std::string>> p;
  for (const auto& v : GoVersions()) {
    p.emplace_back(v, "plain");
    p.emplace_back(v, "stripped");
  }
  if (!GoVersions().empty()) p.emplace_back(GoVersions().back(), "pie");
  return p;
}

INSTANTIATE_TEST_SUITE_P(AllGo, HeapGoTest, ::testing::ValuesIn(Params()),
                         [](const ::testing::TestParamInfo<HeapGoTest::ParamType>& i) {
                           std::string n =
                               absl::StrCat("go", std::get<0>(i.param), "_", std::get<1>(i.param));
                           for (char& c : n) {
                             if (c == '.') c = '_';
                           }
                           return n;
                         });

TEST(HeapGoErrorsTest, MemProfileRateZeroIsAClearError) {
  const std::string dir = MakeTempDir("heap_go_rate0");
  auto bin = BuildGo(GoVersions().front(), TestDataDir() + "/targets/heap_go_split",
                     "'-ldflags=-s -w'", dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto target = Start(*bin, {"-rate=-1"});
  ASSERT_GT(target->port, 0);
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  auto p = heap.Collect(target->pid, HeapRequest());
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(p.status())) << p.status();
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr("MemProfileRate is 0"));
}

TEST(HeapGoErrorsTest, NonGoTargetIsUnimplemented) {
  auto t = Start("/bin/sleep", {"30"}, false);
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  auto p = heap.Collect(t->pid, HeapRequest());
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsUnimplemented(p.status())) << p.status();
}

// The HTTP contract: /debug/pprof/heap and /allocs served through PprofServer for a Go target.
TEST(HeapServerTest, ServesHeapAndAllocsForTheTarget) {
  const std::string dir = MakeTempDir("heap_server");
  auto bin = BuildGo(GoVersions().back(), TestDataDir() + "/targets/heap_go_split",
                     "'-ldflags=-s -w'", dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto target = Start(*bin, {absl::StrCat("-rate=", kRate)});
  ASSERT_GT(target->port, 0);
  auto info = ReadProcessInfo(target->pid);
  ASSERT_TRUE(info.ok()) << info.status();

  ProcessSymbolizer symbolizer;
  CpuProfiler cpu(
      []() -> absl::StatusOr<std::unique_ptr<CpuSampler>> {
        return std::unique_ptr<CpuSampler>(new ::pprof_sidecar::testing::FakeCpuSampler({}));
      },
      &symbolizer, 100);
  HeapProfiler heap(&symbolizer);
  TargetView view{[&]() -> std::optional<ProcessInfo> { return *info; },
                  [] { return std::string("test"); }};
  PprofServer server(&cpu, &symbolizer, view, ServerOptions());
  server.SetHeapProfiler(&heap);
  ASSERT_TRUE(server.Bind("127.0.0.1", 0).ok());
  std::thread serve([&] { (void)server.Serve(); });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  httplib::Client cli("127.0.0.1", server.port());
  cli.set_read_timeout(30, 0);

  auto h = cli.Get("/debug/pprof/heap?gc=1");
  auto a = cli.Get("/debug/pprof/allocs?seconds=1");
  auto bad = cli.Get("/debug/pprof/heap?seconds=0");
  auto dbg = cli.Get("/debug/pprof/heap?debug=1");
  auto m = cli.Get("/metrics");
  server.Stop();
  serve.join();

  ASSERT_TRUE(h && a && bad && dbg && m);
  EXPECT_EQ(h->status, 200) << h->body;
  EXPECT_EQ(h->get_header_value("Content-Disposition"), "attachment; filename=\"heap\"");
  EXPECT_EQ(a->status, 200) << a->body;
  EXPECT_EQ(a->get_header_value("Content-Disposition"), "attachment; filename=\"allocs-delta\"");
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(dbg->status, 400);
  EXPECT_THAT(m->body, ::testing::HasSubstr("pprof_sidecar_heap_profiles_total 2"));

  auto hs = SummarizeProfile(WriteFile(dir + "/heap.pb.gz", h->body));
  ASSERT_TRUE(hs.ok()) << hs.status();
  EXPECT_EQ(hs->default_sample_type, "");
  EXPECT_THAT(hs->comments, ::testing::Contains(::testing::HasSubstr("gc=1 ignored")));
  EXPECT_GT(Flat(*hs, "main.bigSite", 3), 0);
  auto as = SummarizeProfile(WriteFile(dir + "/allocs.pb.gz", a->body));
  ASSERT_TRUE(as.ok()) << as.status();
  EXPECT_EQ(as->default_sample_type, "alloc_space");
  EXPECT_GE(as->duration_nanos, 1000000000);
  EXPECT_GT(Flat(*as, "main.bigSite", 1), Flat(*as, "main.smallSite", 1));
}

// Non-Go targets: SetTarget with the same pid (the tracker's recheck) asks the attached sampler
// for newly mapped allocators; a failed attach is retried, not on every check but after a
// growing delay.
class FakeNativeSource : public NativeHeapSource {
 public:
  FakeNativeSource(pid_t pid, std::atomic<int>* rechecks) : pid_(pid), rechecks_(rechecks) {}
  pid_t pid() const override { return pid_; }
  GoHeapSnapshot Snapshot() override { return {}; }
  MallocSamplerStats stats() const override { return {}; }
  absl::Time attached_at() const override { return absl::UnixEpoch(); }
  std::string Describe() const override { return "fake"; }
  absl::StatusOr<int> ProbeNewMappings() override {
    // The first recheck finds 3 new functions; the third takes 5 ms (a large maps file).
    const int n = rechecks_->fetch_add(1);
    if (n == 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return n == 0 ? 3 : 0;
  }

 private:
  const pid_t pid_;
  std::atomic<int>* const rechecks_;
};

TEST(HeapNativeTest, RechecksAttachedSamplerAndRetriesFailedAttachWithBackoff) {
  auto t = Start("/bin/sleep", {"30"}, false);
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  std::atomic<int> attempts{0}, rechecks{0};
  heap.EnableNative([&](pid_t pid) -> absl::StatusOr<std::unique_ptr<NativeHeapSource>> {
    if (attempts.fetch_add(1) < 2) return absl::NotFoundError("no allocator mapped yet");
    return std::make_unique<FakeNativeSource>(pid, &rechecks);
  });
  heap.SetTarget(t->pid);  // fails; next try in 1 s
  heap.SetTarget(t->pid);
  heap.SetTarget(t->pid);
  EXPECT_EQ(attempts.load(), 1);
  EXPECT_EQ(heap.stats().native_attach_errors, 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  heap.SetTarget(t->pid);  // fails again; next try in 2 s
  EXPECT_EQ(attempts.load(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  heap.SetTarget(t->pid);  // still backing off
  EXPECT_EQ(attempts.load(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  heap.SetTarget(t->pid);  // attaches
  EXPECT_EQ(attempts.load(), 3);
  ASSERT_TRUE(heap.stats().native_attached);
  EXPECT_EQ(rechecks.load(), 0);
  auto recheck_after = [&](int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    heap.SetTarget(t->pid);
  };
  recheck_after(0);
  recheck_after(200);  // the fake's rechecks take microseconds: due again after milliseconds
  EXPECT_EQ(rechecks.load(), 2);
  EXPECT_EQ(heap.stats().native_late_probes, 3u);
  EXPECT_EQ(attempts.load(), 3);
  // A recheck that took 5 ms is not repeated for 5 s (at most 0.1 % of the time).
  recheck_after(200);
  EXPECT_EQ(rechecks.load(), 3);
  recheck_after(200);
  recheck_after(200);
  EXPECT_EQ(rechecks.load(), 3);
  heap.SetTarget(std::nullopt);
  EXPECT_FALSE(heap.stats().native_attached);
}

}  // namespace
}  // namespace pprof_sidecar
