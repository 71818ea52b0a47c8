// End-to-end: real Go targets built from source (every Go version, once stripped, once PIE)
// allocate 3 bytes at main.bigSite for every byte at main.smallSite, keep a known number of
// objects of each site live, and serve their own net/http/pprof. The agent's heap profile is
// compared with the target's own /debug/pprof/heap fetched in the same moment.
#include "agent/heap/heap_profiler.h"

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/heap/heap_source.h"
#include "agent/server/pprof_server.h"
#include "agent/target/target_discovery.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::GoVersions;
using ::pprof_sidecar::testing::kGoStrippedPie;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::OldestAndNewestGo;
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

// Sample values at `index` by stack (function names leaf first, inlined frames expanded), zero
// samples left out.
std::map<std::string, int64_t> ByStack(const PprofSummary& s, int index) {
  std::map<std::string, int64_t> m;
  for (const auto& st : s.samples) {
    if (index >= static_cast<int>(st.values.size()) || st.values[index] == 0) continue;
    std::vector<std::string> frames;
    for (const std::string& f : st.frames) frames.push_back(f);
    m[absl::StrJoin(frames, " < ")] += st.values[index];
  }
  return m;
}

// The stacks whose values differ, one line each: "ours <value> go <value>: <stack>".
std::string StackDifferences(const std::map<std::string, int64_t>& ours,
                             const std::map<std::string, int64_t>& go) {
  std::map<std::string, std::pair<int64_t, int64_t>> both;
  for (const auto& [k, v] : ours) both[k].first = v;
  for (const auto& [k, v] : go) both[k].second = v;
  std::string out;
  for (const auto& [k, v] : both) {
    if (v.first != v.second)
      absl::StrAppend(&out, "ours ", v.first, " go ", v.second, ": ", k, "\n");
  }
  return out;
}

int Index(const PprofSummary& s, const std::string& type) {
  for (size_t i = 0; i < s.sample_types.size(); ++i) {
    if (s.sample_types[i].type == type) return static_cast<int>(i);
  }
  return -1;
}

// The heap kinds served over HTTP for one target, as the agent serves them (the registry holds
// only what these tests ask for: no CPU kind).
class HeapHttp {
 public:
  HeapHttp(HeapProfiler* heap, ProcessSymbolizer* symbolizer, ProcessInfo target)
      : target_(std::move(target)),
        server_(Registry(heap), symbolizer,
                TargetView{[this]() -> std::optional<ProcessInfo> { return target_; },
                           [] { return std::string("test"); }},
                ServerOptions()) {
    bound_ = server_.Bind("127.0.0.1", 0);
    if (bound_.ok()) serve_ = std::thread([this] { (void)server_.Serve(); });
  }
  ~HeapHttp() {
    server_.Stop();
    if (serve_.joinable()) serve_.join();
  }
  const absl::Status& bound() const { return bound_; }
  httplib::Client Client() const {
    httplib::Client c("127.0.0.1", server_.port());
    c.set_read_timeout(30, 0);
    return c;
  }

 private:
  const ProfileRegistry* Registry(HeapProfiler* heap) {
    if (absl::Status st = AddHeapSources(heap, &registry_); !st.ok()) bound_ = st;
    return &registry_;
  }
  ProcessInfo target_;
  ProfileRegistry registry_;
  absl::Status bound_;
  PprofServer server_;
  std::thread serve_;
};

class HeapGoTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(HeapGoTest, MatchesTheTargetsOwnHeapProfile) {
  const auto& [version, variant] = GetParam();
  const std::string dir = MakeTempDir("heap_go");
  const std::string flags = variant == "stripped" ? kGoStrippedPie : "";
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
  bool same_cycle = false;
  for (int attempt = 0; attempt < 10 && !same_cycle; ++attempt) {
    auto before = heap.ReadGoSnapshot(target->pid);
    ASSERT_TRUE(before.ok()) << before.status();
    ours = heap.Collect(target->pid, req);
    auto res = cli.Get("/debug/pprof/heap");
    go_status = res ? res->status : -1;
    go_body = res ? res->body : "";
    auto after = heap.ReadGoSnapshot(target->pid);
    ASSERT_TRUE(after.ok()) << after.status();
    same_cycle = before->cycle == after->cycle;
  }
  ASSERT_TRUE(same_cycle) << "a GC published a new heap profile during every attempt";
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
  // The same numbers as the target's own profile: both are the runtime's published cycle,
  // read between the same two GCs, scaled the same way.
  ASSERT_GT(g->totals[inuse], 0);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(s->totals[i], g->totals[i]) << s->sample_types[i].type;
  }
  EXPECT_EQ(big, Flat(*g, "main.bigSite", alloc));
  EXPECT_EQ(small, Flat(*g, "main.smallSite", alloc));
  // Stack by stack (function names leaf first, inlined callers included: net/http's, the
  // runtime's), the same values as Go's own profile: the same leading runtime frames hidden and
  // the PCs Go records for inlined callers folded into the same locations.
  for (int index : {alloc, inuse}) {
    EXPECT_EQ(StackDifferences(ByStack(*s, index), ByStack(*g, index)), "")
        << s->sample_types[index].type;
  }
  printf("go%s %s: inuse_space %lld (Go's own %lld), alloc_space %lld (Go's own %lld)\n",
         version.c_str(), variant.c_str(), static_cast<long long>(s->totals[inuse]),
         static_cast<long long>(g->totals[inuse]), static_cast<long long>(s->totals[alloc]),
         static_cast<long long>(g->totals[alloc]));
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
  auto go = ::pprof_sidecar::testing::GoTool(version);
  ASSERT_TRUE(go.ok()) << go.status();
  auto top = RunCommand(
      absl::StrCat(*go, " tool pprof -top -sample_index=alloc_space '", dir, "/ours.pb.gz' 2>&1"));
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
  // The Go release is known and a heap read works: nothing is reported unavailable.
  auto info = heap.TargetInfo(target->pid);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->is_go);
  EXPECT_TRUE(absl::StartsWith(info->go_version, "go" + version)) << info->go_version;
  EXPECT_TRUE(info->symbols.ok()) << info->symbols;
  EXPECT_TRUE(info->heap.ok()) << info->heap;
  fprintf(stderr, "go%s %s: %lu buckets read in %ld us\n", version.c_str(), variant.c_str(),
          static_cast<unsigned long>(st.last_buckets), static_cast<long>(st.last_read_micros));
}

// Every release stripped (stripped PIE, -trimpath: the runtime's variables located from its
// code); with a symbol table, the oldest and newest (LocateGoHeapVarsTest checks for every
// release that both ways find the same variables).
std::vector<std::tuple<std::string, std::string>> Params() {
  std::vector<std::tuple<std::string, std::string>> p;
  const std::vector<std::string> ends = OldestAndNewestGo();
  for (const auto& v : GoVersions()) {
    if (std::find(ends.begin(), ends.end(), v) != ends.end()) p.emplace_back(v, "plain");
    p.emplace_back(v, "stripped");
  }
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
  auto bin = BuildGo(GoVersions().front(), TestDataDir() + "/targets/heap_go_split", kGoStrippedPie,
                     dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto target = Start(*bin, {"-rate=-1"});
  ASSERT_GT(target->port, 0);
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  auto p = heap.Collect(target->pid, HeapRequest());
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(p.status())) << p.status();
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr("MemProfileRate is 0"));

  // Over HTTP: the target's state, not an agent failure: 503 with the reason (was a 500).
  auto info = ReadProcessInfo(target->pid);
  ASSERT_TRUE(info.ok()) << info.status();
  HeapHttp http(&heap, &symbolizer, *info);
  ASSERT_TRUE(http.bound().ok()) << http.bound();
  httplib::Client cli = http.Client();
  for (const char* path : {"/debug/pprof/heap", "/debug/pprof/allocs"}) {
    auto r = cli.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 503) << path << ": " << r->body;
    EXPECT_THAT(r->body, ::testing::HasSubstr("MemProfileRate is 0")) << path;
    EXPECT_EQ(r->get_header_value("X-Go-Pprof"), "1");
  }
}

// A delta window cut short (the agent is stopping) returns the delta so far and says so.
TEST(HeapGoDeltaTest, CutShortWindowReturnsTheDeltaSoFar) {
  const std::string dir = MakeTempDir("heap_go_cut");
  auto bin = BuildGo(GoVersions().back(), TestDataDir() + "/targets/heap_go_split",
                     "'-ldflags=-s -w'", dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto target = Start(*bin, {absl::StrCat("-rate=", kRate)});
  ASSERT_GT(target->port, 0);
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  HeapRequest req;
  req.kind = HeapProfileKind::kAllocs;
  req.delta = absl::Seconds(300);
  const absl::Time t0 = absl::Now();
  req.cut_short = [t0] { return absl::Now() - t0 > absl::Seconds(2); };
  req.cut_short_reason = "test stop";
  auto p = heap.Collect(target->pid, req);
  const absl::Duration took = absl::Now() - t0;
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_LT(took, absl::Seconds(10));
  auto s = SummarizeProfile(WriteFile(dir + "/cut.pb.gz", *p));
  ASSERT_TRUE(s.ok()) << s.status();
  bool said = false;
  for (const auto& c : s->comments)
    said |= absl::StrContains(c, "cut short") && absl::StrContains(c, "test stop");
  EXPECT_TRUE(said);
  EXPECT_GE(s->duration_nanos, 2000000000);
  EXPECT_LT(s->duration_nanos, 10000000000LL);
  // The client going away drops the window instead.
  req.cut_short = nullptr;
  const absl::Time t1 = absl::Now();
  req.cancelled = [t1] { return absl::Now() - t1 > absl::Seconds(1); };
  auto c = heap.Collect(target->pid, req);
  EXPECT_TRUE(absl::IsCancelled(c.status())) << c.status();
}

TEST(HeapGoErrorsTest, NonGoTargetIsUnimplemented) {
  auto t = Start("/bin/sleep", {"30"}, false);
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  auto p = heap.Collect(t->pid, HeapRequest());
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsUnimplemented(p.status())) << p.status();
}

// native_heap/native_allocs with malloc profiling off: 501 naming the flag, for any target.
TEST(HeapGoErrorsTest, NativeKindsWithMallocProfilingOffAreUnimplemented) {
  auto t = Start("/bin/sleep", {"30"}, false);
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  heap.EnableNative(
      [](pid_t) -> absl::StatusOr<std::unique_ptr<NativeHeapSource>> {
        return absl::InternalError("must not attach");
      },
      NativeHeapOptions{MallocPolicy::kOff});
  HeapRequest req;
  req.native = true;
  auto p = heap.Collect(t->pid, req);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsUnimplemented(p.status())) << p.status();
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr("--malloc_profiling=off"));
}

// The HTTP contract: /debug/pprof/heap and /allocs served through PprofServer for a Go target.
TEST(HeapServerTest, ServesHeapAndAllocsForTheTarget) {
  const std::string dir = MakeTempDir("heap_server");
  auto bin = BuildGo(GoVersions().back(), TestDataDir() + "/targets/heap_go_split", kGoStrippedPie,
                     dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto target = Start(*bin, {absl::StrCat("-rate=", kRate)});
  ASSERT_GT(target->port, 0);
  auto info = ReadProcessInfo(target->pid);
  ASSERT_TRUE(info.ok()) << info.status();

  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  HeapHttp http(&heap, &symbolizer, *info);
  ASSERT_TRUE(http.bound().ok()) << http.bound();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  httplib::Client cli = http.Client();

  auto h = cli.Get("/debug/pprof/heap?gc=1");
  auto a = cli.Get("/debug/pprof/allocs?seconds=1");
  auto bad = cli.Get("/debug/pprof/heap?seconds=0");
  auto dbg = cli.Get("/debug/pprof/heap?debug=1");
  auto m = cli.Get("/metrics");

  ASSERT_TRUE(h && a && bad && dbg && m);
  EXPECT_EQ(h->status, 200) << h->body;
  EXPECT_EQ(h->get_header_value("Content-Disposition"), "attachment; filename=\"heap\"");
  EXPECT_EQ(a->status, 200) << a->body;
  EXPECT_EQ(a->get_header_value("Content-Disposition"), "attachment; filename=\"allocs-delta\"");
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(dbg->status, 400);
  EXPECT_THAT(m->body, ::testing::HasSubstr("pprof_sidecar_heap_profiles_total 2"));
  // The target's Go release is named, nothing is unavailable.
  auto go = ::pprof_sidecar::testing::GoTool(GoVersions().back());
  ASSERT_TRUE(go.ok()) << go.status();
  const std::string release(absl::StripAsciiWhitespace(RunCommand(*go + " env GOVERSION").output));
  EXPECT_THAT(m->body,
              ::testing::HasSubstr(absl::StrCat("pprof_sidecar_target_info{pid=\"", target->pid,
                                                "\",go_version=\"", release, "\"} 1")));
  EXPECT_THAT(m->body, ::testing::HasSubstr("pprof_sidecar_target_heap_available 1"));

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

// Replaces every occurrence of `from` by `to` (same length) in `bytes`; returns the count.
int Patch(std::string* bytes, const std::string& from, const std::string& to) {
  int n = 0;
  for (size_t p = bytes->find(from); p != std::string::npos; p = bytes->find(from, p + 1)) {
    bytes->replace(p, to.size(), to);
    ++n;
  }
  return n;
}

// A Go release newer than the agent, simulated on the newest toolchain's stripped PIE build: its
// build info (and runtime.buildVersion) relabelled go1.99.0, and functions that use
// runtime.mbuckets renamed, as a release that reorganized them would. One renamed anchor changes
// nothing (the others still agree); all of them renamed, the heap answer names the release and
// what could not be located, /healthz says heap and allocs are unavailable and why, /metrics
// carries the release.
TEST(HeapServerTest, ANewerGoReleaseIsNamedWithWhatCannotBeRead) {
  const std::string dir = MakeTempDir("heap_newer_go");
  auto bin = BuildGo(GoVersions().back(), TestDataDir() + "/targets/heap_go_split", kGoStrippedPie,
                     dir + "/target");
  ASSERT_TRUE(bin.ok()) << bin.status();
  std::ifstream in(*bin, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto go = ::pprof_sidecar::testing::GoTool(GoVersions().back());
  ASSERT_TRUE(go.ok()) << go.status();
  const std::string release(absl::StripAsciiWhitespace(RunCommand(*go + " env GOVERSION").output));
  std::string future = "go1.99.0";
  future.resize(release.size(), '0');  // same length ("go1.99.00" for a two-digit patch)
  ASSERT_GE(Patch(&bytes, release, future), 1);
  auto write = [&](const std::string& path, const std::string& data) {
    WriteFile(path, data);
    chmod(path.c_str(), 0755);
    return path;
  };

  // One anchor of runtime.mbuckets gone: still located.
  std::string one = bytes;
  ASSERT_EQ(Patch(&one, std::string("runtime.mProf_FlushLocked\0", 26),
                  std::string("runtime.mProf_FlushLockeZ\0", 26)),
            1);  // its name in the pclntab
  {
    auto target = Start(write(dir + "/one", one), {absl::StrCat("-rate=", kRate)});
    ASSERT_GT(target->port, 0);
    ProcessSymbolizer symbolizer;
    HeapProfiler heap(&symbolizer);
    auto p = heap.Collect(target->pid, HeapRequest());
    EXPECT_TRUE(p.ok()) << p.status();
  }

  // Every anchor of runtime.mbuckets renamed.
  for (const char* fn :
       {"runtime.memProfileInternal", "runtime.MemProfile", "runtime.stkbucket",
        "runtime.iterate_memprof", "runtime.mProf_Flush", "runtime.mProf_PostSweep"}) {
    std::string from = std::string(fn) + '\0', to = from;
    to[to.size() - 2] = 'Z';
    Patch(&one, from, to);
  }
  auto target = Start(write(dir + "/all", one), {absl::StrCat("-rate=", kRate)});
  ASSERT_GT(target->port, 0);
  auto info = ReadProcessInfo(target->pid);
  ASSERT_TRUE(info.ok()) << info.status();
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  auto p = heap.Collect(target->pid, HeapRequest());
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr(future));
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr("newer than go1.27"));
  EXPECT_THAT(std::string(p.status().message()), ::testing::HasSubstr("runtime.mbuckets"));

  HeapHttp http(&heap, &symbolizer, *info);
  ASSERT_TRUE(http.bound().ok()) << http.bound();
  httplib::Client cli = http.Client();
  auto h = cli.Get("/debug/pprof/heap");
  auto health = cli.Get("/healthz");
  auto m = cli.Get("/metrics");
  ASSERT_TRUE(h && health && m);
  EXPECT_EQ(h->status, 503) << h->body;
  EXPECT_THAT(h->body, ::testing::HasSubstr(future));
  EXPECT_THAT(health->body, ::testing::HasSubstr("go: " + future));
  EXPECT_THAT(health->body, ::testing::HasSubstr("unavailable: heap, allocs: "));
  EXPECT_THAT(health->body, ::testing::HasSubstr("runtime.mbuckets"));
  EXPECT_THAT(m->body, ::testing::HasSubstr("go_version=\"" + future + "\""));
  EXPECT_THAT(m->body, ::testing::HasSubstr("pprof_sidecar_target_heap_available 0"));
  printf("/healthz:\n%s\n/debug/pprof/heap: %d %s\n", health->body.c_str(), h->status,
         h->body.c_str());
}

// Non-Go targets: SetTarget with the same pid (the tracker's recheck) asks the attached sampler
// for newly mapped allocators; a failed attach is retried, not on every check but after a
// growing delay.
class FakeNativeSource : public NativeHeapSource {
 public:
  FakeNativeSource(pid_t pid, std::atomic<int>* rechecks) : pid_(pid), rechecks_(rechecks) {}
  pid_t pid() const override { return pid_; }
  HeapSnapshot Snapshot() override { return {}; }
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
  heap.EnableNative(
      [&](pid_t pid) -> absl::StatusOr<std::unique_ptr<NativeHeapSource>> {
        if (attempts.fetch_add(1) < 2) return absl::NotFoundError("no allocator mapped yet");
        return std::make_unique<FakeNativeSource>(pid, &rechecks);
      },
      NativeHeapOptions{MallocPolicy::kAlways});
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
