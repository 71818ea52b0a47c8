// Goroutine profiles of real Go targets (tests/targets/go_goroutines) built in the test, compared
// with the target's own /debug/pprof/goroutine of the same moment. Reads another process's
// memory and stops its running threads for their registers: needs root/CAP_SYS_PTRACE.
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/goprofile/contention_source.h"
#include "agent/goprofile/goroutine_source.h"
#include "agent/goprofile/threadcreate_source.h"
#include "agent/target/target_discovery.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::GoCacheDir;
using ::pprof_sidecar::testing::GoTool;
using ::pprof_sidecar::testing::kGoStrippedPie;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::SummarizeProfile;
using ::pprof_sidecar::testing::TestDataDir;

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

std::unique_ptr<Target> Start(const std::string& bin, const std::vector<std::string>& args) {
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
  std::string line;
  char c;
  while (read(fds[0], &c, 1) == 1 && c != '\n') line += c;
  if (absl::StartsWith(line, "port=")) absl::SimpleAtoi(line.substr(5), &t->port);
  close(fds[0]);
  return t;
}

std::string GoOwn(int port, const std::string& name, int debug) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(60, 0);
  auto r = cli.Get(absl::StrCat("/debug/pprof/", name, "?debug=", debug).c_str());
  return r && r->status == 200 ? r->body : "";
}

// debug=1 text -> (stack record text without its count -> count), and the total.
struct CountText {
  int64_t total = -1;
  std::map<std::string, int64_t> records;
};
CountText ParseCountText(const std::string& text) {
  CountText out;
  std::vector<std::string> blocks = absl::StrSplit(text, "\n\n");
  for (size_t i = 0; i < blocks.size(); ++i) {
    std::string b = blocks[i];
    if (i == 0) {
      const size_t nl = b.find('\n');
      absl::SimpleAtoi(b.substr(b.find("total ") + 6, nl - b.find("total ") - 6), &out.total);
      b = nl == std::string::npos ? "" : b.substr(nl + 1);
    }
    const size_t sp = b.find(' ');
    int64_t n = 0;
    if (sp == std::string::npos || !absl::SimpleAtoi(b.substr(0, sp), &n)) continue;
    out.records[b.substr(sp + 1)] += n;
  }
  return out;
}

// debug=2 text -> goroutine id -> its block (header, frames, creator).
std::map<std::string, std::string> ParseDump(const std::string& text) {
  std::map<std::string, std::string> out;
  for (absl::string_view b : absl::StrSplit(text, "\n\n")) {
    if (!absl::StartsWith(b, "goroutine ")) continue;
    out[std::string(b.substr(10, b.find(' ', 10) - 10))] = std::string(b);
  }
  return out;
}

absl::StatusOr<std::string> Collect(GoroutineSource& src, pid_t pid, int debug) {
  ProfileRequest req;
  absl::StatusOr<ProcessInfo> info = ReadProcessInfo(pid);
  if (!info.ok()) return info.status();
  req.target = *info;
  req.debug = debug;
  absl::StatusOr<ProfileResponse> r = src.Collect(req);
  if (!r.ok()) return r.status();
  return r->body;
}

bool IsPopulation(const std::string& record) {
  return absl::StrContains(record, "main.recvWaiter") ||
         absl::StrContains(record, "main.selectWaiter") ||
         absl::StrContains(record, "main.mutexWaiter");
}

class GoroutineProfileTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  void SetUp() override {
    const auto& [version, variant] = GetParam();
    dir_ = MakeTempDir("goroutines");
    auto bin = BuildGo(version, TestDataDir() + "/targets/go_goroutines",
                       variant == "stripped_pie" ? kGoStrippedPie : "", dir_ + "/target");
    ASSERT_TRUE(bin.ok()) << bin.status();
    bin_ = *bin;
  }
  std::string dir_, bin_;
  ProcessSymbolizer symbolizer_;
};

TEST_P(GoroutineProfileTest, AgreesWithTheTargetsOwnProfile) {
  // Goroutines under pprof labels (Go 1.24+ keep them in a sorted slice, earlier releases in a
  // Go map): their records, "# labels:" lines included, must be Go's. A finalizer blocked for
  // ever, a cleanup too: the goroutine running it is a user goroutine for Go.
  auto t = Start(bin_, {"-recv=1000", "-select=100", "-mutex=10", "-spin=2", "-labeled=30",
                        "-finalizer", "-cleanup"});
  ASSERT_GT(t->port, 0);
  GoroutineSource src(std::make_shared<GoBinaryCache>(), &symbolizer_);

  // debug=1: records the agent saw unchanged before and after Go's own read are Go's too.
  auto a = Collect(src, t->pid, 1);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string go1 = GoOwn(t->port, "goroutine", 1);
  auto b = Collect(src, t->pid, 1);
  ASSERT_TRUE(b.ok()) << b.status();
  const CountText ours_a = ParseCountText(*a), ours_b = ParseCountText(*b),
                  go = ParseCountText(go1);
  ASSERT_GT(go.total, 1100) << go1;
  // Go's total counts its own handler goroutine (and the connection reader it started).
  EXPECT_NEAR(ours_a.total, go.total, 3) << *a << "\n----\n" << go1;
  int64_t stable = 0, population = 0;
  for (const auto& [rec, n] : ours_a.records) {
    auto it = ours_b.records.find(rec);
    if (it == ours_b.records.end() || it->second != n) continue;
    if (absl::StrContains(rec, "main.spinner")) continue;  // running: preempted anywhere by Go
    stable += n;
    if (IsPopulation(rec)) population += n;
    auto g = go.records.find(rec);
    ASSERT_NE(g, go.records.end()) << "only in the agent's:\n" << n << " " << rec << "\n" << go1;
    EXPECT_EQ(g->second, n) << rec;
  }
  EXPECT_EQ(population, 1110) << *a;
  for (int w = 0; w < 3; ++w) {
    EXPECT_THAT(*a, ::testing::HasSubstr(absl::StrCat("# labels: {\"worker\":\"w", w, "\"}")));
  }
  EXPECT_GE(stable, 1111);
  EXPECT_THAT(*a, ::testing::HasSubstr("main.blockedFinalizer")) << *a;
  EXPECT_THAT(go1, ::testing::HasSubstr("main.blockedFinalizer")) << go1;
  if (std::get<0>(GetParam()) >= "1.25") {  // cleanup goroutines of their own
    EXPECT_THAT(*a, ::testing::HasSubstr("main.blockedCleanup")) << *a;
    EXPECT_THAT(go1, ::testing::HasSubstr("main.blockedCleanup")) << go1;
  }
  // The running goroutines have their stacks from their threads' registers.
  int64_t spinners = 0;
  for (const auto& [rec, n] : ours_a.records) {
    if (absl::StrContains(rec, "\tmain.spinner+")) spinners += n;
  }
  EXPECT_EQ(spinners, 2) << *a;

  // debug=2: every blocked goroutine's block (header with its wait reason, frames with their
  // argument words, creator) is Go's, byte for byte.
  auto d2 = Collect(src, t->pid, 2);
  ASSERT_TRUE(d2.ok()) << d2.status();
  const std::string go2 = GoOwn(t->port, "goroutine", 2);
  const auto ours2 = ParseDump(*d2), gos2 = ParseDump(go2);
  EXPECT_NEAR(ours2.size(), gos2.size(), 3);
  int same = 0;
  for (const auto& [id, block] : ours2) {
    if (!IsPopulation(block)) continue;
    auto g = gos2.find(id);
    ASSERT_NE(g, gos2.end()) << block;
    EXPECT_EQ(block, g->second);
    same += block == g->second;
  }
  EXPECT_EQ(same, 1110);
  EXPECT_THAT(*d2, ::testing::HasSubstr("[chan receive]:\nmain.recvWaiter()"));
  EXPECT_THAT(*d2, ::testing::HasSubstr("[select]:\n"));
  EXPECT_THAT(*d2,
              ::testing::HasSubstr(std::get<0>(GetParam()) == "1.19" ? "[semacquire]:\n"
                                                                     : "[sync.Mutex.Lock]:\n"));

  // debug=0: go tool pprof reads it; per function, the counts are Go's.
  auto d0 = Collect(src, t->pid, 0);
  ASSERT_TRUE(d0.ok()) << d0.status();
  std::ofstream(dir_ + "/ours.pb.gz") << *d0;
  httplib::Client cli("127.0.0.1", t->port);
  auto own = cli.Get("/debug/pprof/goroutine");
  ASSERT_TRUE(own && own->status == 200);
  std::ofstream(dir_ + "/go.pb.gz") << own->body;
  auto go_tool = GoTool(std::get<0>(GetParam()));
  ASSERT_TRUE(go_tool.ok()) << go_tool.status();
  auto traces = RunCommand(absl::StrCat("GOCACHE=", GoCacheDir(std::get<0>(GetParam())), " ",
                                        *go_tool, " tool pprof -traces ", dir_, "/ours.pb.gz"));
  EXPECT_EQ(traces.exit_code, 0) << traces.output;
  EXPECT_THAT(traces.output, ::testing::HasSubstr("main.recvWaiter"));
  auto so = SummarizeProfile(dir_ + "/ours.pb.gz");
  auto sg = SummarizeProfile(dir_ + "/go.pb.gz");
  ASSERT_TRUE(so.ok() && sg.ok()) << so.status() << sg.status();
  ASSERT_EQ(so->sample_types.size(), 1u);
  EXPECT_EQ(so->sample_types[0].type, "goroutine");
  EXPECT_EQ(so->sample_types[0].unit, "count");
  EXPECT_NEAR(so->totals[0], sg->totals[0], 3);
  for (const char* f : {"main.recvWaiter", "main.selectWaiter", "main.mutexWaiter",
                        "runtime.chanrecv1", "runtime.selectgo", "sync.(*Mutex).Lock"}) {
    ASSERT_TRUE(sg->funcs.count(f)) << f;
    ASSERT_TRUE(so->funcs.count(f)) << f;
    EXPECT_EQ(so->funcs.at(f).cum[0], sg->funcs.at(f).cum[0]) << f;
  }
}

// Goroutines created and exiting all the time: every stack the agent returns is whole (it ends
// at runtime.goexit: the reader drops torn ones), and the count stays within the churn of Go's.
TEST_P(GoroutineProfileTest, ChurningTargetGivesWholeStacks) {
  auto t = Start(bin_, {"-recv=200", "-select=0", "-mutex=0", "-spin=0", "-churn=20"});
  ASSERT_GT(t->port, 0);
  GoroutineSource src(std::make_shared<GoBinaryCache>(), &symbolizer_);
  for (int i = 0; i < 5; ++i) {
    const CountText before = ParseCountText(GoOwn(t->port, "goroutine", 1));
    GoProcess proc;
    auto snap = src.Snapshot(t->pid, &proc);
    ASSERT_TRUE(snap.ok()) << snap.status();
    const CountText after = ParseCountText(GoOwn(t->port, "goroutine", 1));
    int64_t user = 0, blocked = 0;
    for (const Goroutine& g : snap->goroutines) {
      if (g.system) continue;
      ++user;
      if (g.frames.empty()) continue;  // running, its thread not stoppable: no stack, counted
      auto last = proc.bin->pcln().LookupFunc(g.frames.back().sym_pc);
      ASSERT_TRUE(last.ok());
      EXPECT_EQ(last->name, "runtime.goexit") << "goroutine " << g.goid;
      for (const GoFrame& f : g.frames) {
        auto fn = proc.bin->pcln().LookupFunc(f.sym_pc);
        if (fn.ok() && fn->name == "main.recvWaiter") ++blocked;
      }
    }
    EXPECT_EQ(blocked, 200);
    const int64_t lo = std::min(before.total, after.total),
                  hi = std::max(before.total, after.total);
    // Churn: ~20 goroutines started per millisecond, each living well under a millisecond.
    EXPECT_GE(user, lo - 40) << "before " << before.total << " after " << after.total;
    EXPECT_LE(user, hi + 40) << "before " << before.total << " after " << after.total;
    printf("churn read %d: agent %ld goroutines (retries %d, unreadable %d), Go %ld..%ld\n", i,
           static_cast<long>(user), snap->retries, snap->unreadable, static_cast<long>(lo),
           static_cast<long>(hi));
  }
}

// threadcreate: every M's creation stack, as Go's own (equal text when no thread was created
// between the agent's two reads around Go's).
TEST_P(GoroutineProfileTest, ThreadCreateEqualsGos) {
  auto t = Start(bin_, {"-recv=10", "-select=0", "-mutex=0", "-spin=2"});
  ASSERT_GT(t->port, 0);
  ThreadCreateSource src(std::make_shared<GoBinaryCache>(), &symbolizer_);
  bool compared = false;
  for (int attempt = 0; attempt < 5 && !compared; ++attempt) {
    ProfileRequest req;
    auto info = ReadProcessInfo(t->pid);
    ASSERT_TRUE(info.ok());
    req.target = *info;
    req.debug = 1;
    auto a = src.Collect(req);
    ASSERT_TRUE(a.ok()) << a.status();
    const std::string go = GoOwn(t->port, "threadcreate", 1);
    auto b = src.Collect(req);
    ASSERT_TRUE(b.ok()) << b.status();
    if (a->body != b->body) continue;
    compared = true;
    EXPECT_EQ(a->body, go);
    EXPECT_THAT(a->body, ::testing::HasSubstr("threadcreate profile: total "));
    EXPECT_THAT(a->body, ::testing::HasSubstr("runtime.newm+"));
    req.debug = 0;
    auto pb = src.Collect(req);
    ASSERT_TRUE(pb.ok()) << pb.status();
    std::ofstream(dir_ + "/tc.pb.gz") << pb->body;
    auto s = SummarizeProfile(dir_ + "/tc.pb.gz");
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->sample_types[0].type, "threadcreate");
    EXPECT_EQ(s->totals[0], ParseCountText(go).total);
  }
  EXPECT_TRUE(compared) << "threads kept being created";
}

// "--- contention:" text -> (stack pcs -> (cycles, count)) and cycles/second.
struct ContentionText {
  int64_t cycles_per_second = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> records;
};
ContentionText ParseContention(const std::string& text) {
  ContentionText out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "cycles/second=")) {
      absl::SimpleAtoi(line.substr(14), &out.cycles_per_second);
    }
    const size_t at = line.find(" @");
    if (line.empty() || line[0] == '#' || at == absl::string_view::npos) continue;
    std::vector<absl::string_view> v = absl::StrSplit(line.substr(0, at), ' ');
    int64_t cycles = 0, count = 0;
    if (v.size() != 2 || !absl::SimpleAtoi(v[0], &cycles) || !absl::SimpleAtoi(v[1], &count)) {
      continue;
    }
    auto& r = out.records[std::string(line.substr(at + 2))];
    r.first += cycles;
    r.second += count;
  }
  return out;
}

// block and mutex on a target that enabled them: every bucket of Go's own profile is the
// agent's, its counts between the agent's reads just before and after (contention goes on).
TEST_P(GoroutineProfileTest, ContentionMatchesGos) {
  auto t = Start(bin_, {"-recv=0", "-select=0", "-mutex=0", "-spin=0", "-contend", "-block_rate=1",
                        "-mutex_fraction=1"});
  ASSERT_GT(t->port, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto cache = std::make_shared<GoBinaryCache>();
  for (ContentionKind kind : {ContentionKind::kBlock, ContentionKind::kMutex}) {
    ContentionSource src(kind, cache, &symbolizer_);
    ProfileRequest req;
    auto info = ReadProcessInfo(t->pid);
    ASSERT_TRUE(info.ok());
    req.target = *info;
    req.debug = 1;
    auto a = src.Collect(req);
    ASSERT_TRUE(a.ok()) << a.status();
    const std::string go_text = GoOwn(t->port, src.info().name, 1);
    auto b = src.Collect(req);
    ASSERT_TRUE(b.ok()) << b.status();
    const ContentionText ca = ParseContention(a->body), cb = ParseContention(b->body),
                         go = ParseContention(go_text);
    ASSERT_FALSE(go.records.empty()) << go_text;
    EXPECT_NEAR(ca.cycles_per_second, go.cycles_per_second, go.cycles_per_second * 0.01);
    for (const auto& [stack, v] : go.records) {
      ASSERT_TRUE(ca.records.count(stack) && cb.records.count(stack))
          << src.info().name << ": only in Go's: " << stack << "\n"
          << a->body << "\n--- Go's:\n"
          << go_text;
      EXPECT_LE(ca.records.at(stack).second, v.second) << stack;
      EXPECT_GE(cb.records.at(stack).second, v.second) << stack;
      EXPECT_LE(ca.records.at(stack).first, v.first) << stack;
      EXPECT_GE(cb.records.at(stack).first, v.first) << stack;
    }
    EXPECT_THAT(a->body, ::testing::HasSubstr(kind == ContentionKind::kBlock ? "main.contendChan"
                                                                             : "main.contendLock"));
    // seconds=N: a delta, smaller than the totals.
    req.seconds = absl::Seconds(1);
    req.debug = 0;
    auto d = src.Collect(req);
    ASSERT_TRUE(d.ok()) << d.status();
    std::ofstream(dir_ + "/delta.pb.gz") << d->body;
    auto s = SummarizeProfile(dir_ + "/delta.pb.gz");
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_EQ(s->sample_types.size(), 2u);
    EXPECT_EQ(s->sample_types[1].type, "delay");
    EXPECT_GT(s->totals[0], 0);
    EXPECT_TRUE(
        s->funcs.count(kind == ContentionKind::kBlock ? "main.contendChan" : "main.contendLock"))
        << src.info().name << ": the location table names the contended frames";
  }
}

// A target that never enabled them: empty, and the answer says why.
TEST_P(GoroutineProfileTest, ContentionNotEnabledSaysSo) {
  auto t = Start(bin_, {"-recv=0", "-select=0", "-mutex=0", "-spin=0", "-contend"});
  ASSERT_GT(t->port, 0);
  auto cache = std::make_shared<GoBinaryCache>();
  for (ContentionKind kind : {ContentionKind::kBlock, ContentionKind::kMutex}) {
    ContentionSource src(kind, cache, &symbolizer_);
    ProfileRequest req;
    auto info = ReadProcessInfo(t->pid);
    ASSERT_TRUE(info.ok());
    req.target = *info;
    req.debug = 1;
    auto a = src.Collect(req);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_TRUE(ParseContention(a->body).records.empty()) << a->body;
    EXPECT_TRUE(ParseContention(GoOwn(t->port, src.info().name, 1)).records.empty());
    EXPECT_THAT(a->body, ::testing::HasSubstr("never enabled"));
  }
}

// The opt-in rate write: a seconds=N window on a target that never enabled them shows its
// contention, says what was written, and leaves the runtime's rate at 0 again; a request without
// a window writes nothing.
TEST_P(GoroutineProfileTest, OptInRateWriteShowsContentionForTheWindowOnly) {
  auto t = Start(bin_, {"-recv=0", "-select=0", "-mutex=0", "-spin=0", "-contend"});
  ASSERT_GT(t->port, 0);
  auto cache = std::make_shared<GoBinaryCache>();
  for (ContentionKind kind : {ContentionKind::kBlock, ContentionKind::kMutex}) {
    ContentionRateWrite write;
    write.enabled = true;
    write.block_rate_ns = 1000;
    write.mutex_fraction = 1;
    ContentionSource src(kind, cache, &symbolizer_, write);
    ProfileRequest req;
    auto info = ReadProcessInfo(t->pid);
    ASSERT_TRUE(info.ok());
    req.target = *info;
    req.debug = 1;
    auto plain = src.Collect(req);
    ASSERT_TRUE(plain.ok()) << plain.status();
    EXPECT_THAT(plain->body, ::testing::HasSubstr("never enabled"));
    req.seconds = absl::Seconds(1);
    auto a = src.Collect(req);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_THAT(a->body, ::testing::HasSubstr(kind == ContentionKind::kBlock ? "main.contendChan"
                                                                             : "main.contendLock"))
        << a->body;
    EXPECT_THAT(a->body, ::testing::HasSubstr("for this window (--go_contention_rate_write)"));
    auto p = cache->Open(t->pid);
    ASSERT_TRUE(p.ok()) << p.status();
    auto after = ReadContention(*p->mem, *p->bin, p->bias, kind);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->rate, 0) << src.info().name;
    // Go's own endpoint shows what the window recorded (the runtime keeps its buckets) and, for
    // the mutex profile, the fraction it reads back: 0 again.
    const std::string own = GoOwn(t->port, src.info().name, 1);
    EXPECT_THAT(own, ::testing::HasSubstr(kind == ContentionKind::kBlock ? "main.contendChan"
                                                                         : "main.contendLock"));
    if (kind == ContentionKind::kMutex) EXPECT_THAT(own, ::testing::HasSubstr("sampling period=0"));
  }
}

INSTANTIATE_TEST_SUITE_P(GoVersions, GoroutineProfileTest,
                         ::testing::Values(std::make_tuple("1.19", "plain"),
                                           std::make_tuple("1.24", "stripped_pie"),
                                           std::make_tuple("1.27", "plain")),
                         [](const auto& info) {
                           return absl::StrCat(testing::GoVersionName(std::get<0>(info.param)), "_",
                                               std::get<1>(info.param));
                         });

}  // namespace
}  // namespace pprof_sidecar
