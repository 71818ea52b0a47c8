// Privileged: real uprobes on a C target built from source (tests/targets/heap_c_split) that
// allocates 3 bytes at big_site (malloc) for every byte at small_site (calloc), keeps one
// iteration in 8 live and prints its own truth. Checks the alloc_space split, the total against
// the truth, inuse before and after the target frees, google/pprof validity, `go tool pprof
// -top`, the HTTP path through HeapProfiler + PprofServer, and that everything is detached.
#include <dirent.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/heap/heap_profiler.h"
#include "agent/heap/heap_source.h"
#include "agent/profile/cpu_profile.h"
#include "agent/profile/cpu_source.h"
#include "agent/sampler/cpu_sampler.h"
#include "agent/sampler/malloc_sampler.h"
#include "agent/server/pprof_server.h"
#include "agent/testing/fake_cpu_sampler.h"
#include "agent/unwind/sample_unwinder.h"
#include "gtest/gtest.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildNative;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::PprofSummary;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::SummarizeProfile;
using ::pprof_sidecar::testing::TestDataDir;

// ~1,900 live samples for the inuse check (SD 2.3 %), ~12,000 sampled allocations in all.
constexpr int64_t kRate = 32 * 1024;
constexpr long kIters = 131072;  // x 4000 bytes = 512 MiB
// The policy of the tests that attach the sampler when the target is set (SetTarget).
const NativeHeapOptions kAttachNow{MallocPolicy::kAlways};

// The target, driven through its stdin/stdout; killed on destruction.
class CTarget {
 public:
  ~CTarget() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (in_) fclose(in_);
    if (out_) fclose(out_);
  }
  // `env`: NAME=VALUE entries added to the target's environment.
  bool Start(const std::string& bin, const std::vector<std::string>& env = {}) {
    int to[2], from[2];
    if (pipe(to) != 0 || pipe(from) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      for (const std::string& e : env) putenv(strdup(e.c_str()));
      dup2(to[0], 0);
      dup2(from[1], 1);
      close(to[1]);
      close(from[0]);
      execl(bin.c_str(), bin.c_str(), nullptr);
      _exit(127);
    }
    close(to[0]);
    close(from[1]);
    in_ = fdopen(to[1], "w");
    out_ = fdopen(from[0], "r");
    return absl::StartsWith(Line(), "ready ");
  }
  std::string Command(const std::string& cmd) {
    fprintf(in_, "%s\n", cmd.c_str());
    fflush(in_);
    return Line();
  }
  void Kill() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  std::string Line() {
    char buf[256];
    if (!fgets(buf, sizeof(buf), out_)) return "";
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

struct Truth {
  uint64_t big = 0, small = 0, live_big = 0, live_small = 0;
};
Truth ParseDone(const std::string& line) {
  Truth t;
  std::vector<std::string> f = absl::StrSplit(line, ' ');
  if (f.size() == 5 && f[0] == "done") {
    (void)absl::SimpleAtoi(f[1], &t.big);
    (void)absl::SimpleAtoi(f[2], &t.small);
    (void)absl::SimpleAtoi(f[3], &t.live_big);
    (void)absl::SimpleAtoi(f[4], &t.live_small);
  }
  return t;
}

// perf_event and bpf_link fds of this process (one per attached uprobe, or uprobe session link).
int PerfEventFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = readdir(d)) {
    char buf[256];
    ssize_t len = readlinkat(dirfd(d), e->d_name, buf, sizeof(buf) - 1);
    const std::string target = len > 0 ? std::string(buf, len) : "";
    if (target == "anon_inode:[perf_event]" || target == "anon_inode:bpf_link") ++n;
  }
  closedir(d);
  return n;
}

int64_t Flat(const PprofSummary& s, const std::string& fn, int index) {
  auto it = s.funcs.find(fn);
  return it == s.funcs.end() ? 0 : it->second.flat[index];
}

std::string BuildTarget(const std::string& dir) {
  auto bin = BuildNative({TestDataDir() + "/targets/heap_c_split/heap_c_split.c"},
                         "-O2 -g -fno-omit-frame-pointer -fno-builtin", dir + "/heap_c_split");
  EXPECT_TRUE(bin.ok()) << bin.status();
  return bin.ok() ? *bin : "";
}

std::string Save(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
  return path;
}

TEST(MallocSamplerBpfTest, FindsTheCLibraryAllocator) {
  const std::string dir = MakeTempDir("malloc_probes");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir)));
  auto maps = ReadProcMaps(t.pid());
  ASSERT_TRUE(maps.ok()) << maps.status();
  auto probes = FindAllocatorProbes(t.pid(), *maps);
  ASSERT_TRUE(probes.ok()) << probes.status();
  std::set<std::string> fns;
  std::set<uint64_t> offsets;
  for (const auto& p : *probes) {
    EXPECT_TRUE(absl::StrContains(p.mapped, "libc.so")) << p.mapped;  // not the executable
    EXPECT_GT(p.file_offset, 0u);
    EXPECT_TRUE(offsets.insert(p.file_offset).second) << "probed twice: " << p.function;
    fns.insert(p.function);
  }
  // glibc's aligned_alloc and memalign are one function: probed once, under the first name.
  EXPECT_TRUE(fns.count("aligned_alloc") + fns.count("memalign") >= 1);
  fns.erase("aligned_alloc");
  fns.erase("memalign");
  EXPECT_EQ(fns, (std::set<std::string>{"malloc", "calloc", "realloc", "posix_memalign", "valloc",
                                        "pvalloc", "free"}));
}

// Every allocation sampled (rate 1), so the profile must match the target's bytes exactly:
// valloc and pvalloc are counted; a realloc that fails leaves its block live; one that succeeds
// (realloc, or reallocarray, which glibc implements with realloc) frees the old block and
// allocates the new one at its own call site.
TEST(MallocSamplerBpfTest, ReallocOutcomesAndPageAlignedAllocators) {
  const std::string dir = MakeTempDir("malloc_realloc");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir)));
  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  MallocSamplerOptions opts;
  opts.sample_bytes = 1;
  heap.EnableNative([opts](pid_t pid) { return StartMallocSampler(pid, opts); }, kAttachNow);
  heap.SetTarget(t.pid());
  ASSERT_TRUE(heap.stats().native_attached) << heap.stats().native_attach_errors;
  auto inuse = [&](const std::string& name) -> std::map<std::string, int64_t> {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // ring buffer drained
    auto prof = heap.Collect(t.pid(), HeapRequest());
    EXPECT_TRUE(prof.ok()) << prof.status();
    if (!prof.ok()) return {};
    auto s = SummarizeProfile(Save(dir + "/" + name + ".pb.gz", *prof));
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return {};
    std::map<std::string, int64_t> out;
    for (const char* fn : {"valloc_site", "pvalloc_site", "realloc_site", "reallocarray_site",
                           "realloc_fail_site"}) {
      out[fn] = Flat(*s, fn, 3);
    }
    return out;
  };
  constexpr int kBlocks = 200;
  ASSERT_EQ(t.Command(absl::StrCat("valloc ", kBlocks)), absl::StrCat("valloced ", kBlocks * 3000));
  auto m = inuse("after_valloc");
  EXPECT_EQ(m["valloc_site"], kBlocks * 3000);
  EXPECT_EQ(m["pvalloc_site"], kBlocks * 3000);

  ASSERT_EQ(t.Command("nogrow"), absl::StrCat("kept ", 2 * kBlocks * 3000));
  m = inuse("after_failed_realloc");
  EXPECT_EQ(m["valloc_site"], kBlocks * 3000) << "a failed realloc freed its block";
  EXPECT_EQ(m["pvalloc_site"], kBlocks * 3000);
  EXPECT_EQ(m["realloc_fail_site"], 0);
  EXPECT_GE(heap.stats().native.failed, static_cast<uint64_t>(2 * kBlocks));

  ASSERT_EQ(t.Command("grow"), absl::StrCat("grown ", 2 * kBlocks * 6000));
  m = inuse("after_realloc");
  EXPECT_EQ(m["valloc_site"], 0);
  EXPECT_EQ(m["pvalloc_site"], 0);
  EXPECT_EQ(m["realloc_site"], kBlocks * 6000);
  EXPECT_EQ(m["reallocarray_site"], kBlocks * 6000);

  ASSERT_EQ(t.Command("free"), "freed");
  m = inuse("after_free");
  EXPECT_EQ(m["realloc_site"], 0);
  EXPECT_EQ(m["reallocarray_site"], 0);
}

// Totals, inuse, HTTP, deltas and detach, through uprobe sessions (where the kernel has them)
// and through classic uprobe + uretprobe pairs.
void SplitTotalsInuseAndDetach(bool sessions) {
  const std::string dir = MakeTempDir("malloc_sampler");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir)));
  const int perf_fds_before = PerfEventFds();

  ProcessSymbolizer symbolizer;
  HeapProfiler heap(&symbolizer);
  MallocSamplerOptions opts;
  opts.sample_bytes = kRate;
  opts.uprobe_sessions = sessions;
  heap.EnableNative([opts](pid_t pid) { return StartMallocSampler(pid, opts); }, kAttachNow);
  heap.SetTarget(t.pid());
  HeapProfilerStats hs = heap.stats();
  ASSERT_TRUE(hs.native_attached) << "attach errors: " << hs.native_attach_errors;
  auto maps = ReadProcMaps(t.pid());
  ASSERT_TRUE(maps.ok());
  auto probes = FindAllocatorProbes(t.pid(), *maps);
  ASSERT_TRUE(probes.ok());
  // A session per function; else entry + return each, free entry only.
  EXPECT_EQ(hs.native.probes, sessions ? probes->size() : 2 * probes->size() - 1);
  EXPECT_GT(PerfEventFds(), perf_fds_before);

  const Truth truth = ParseDone(t.Command(absl::StrCat("alloc ", kIters)));
  ASSERT_GT(truth.big, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // ring buffer drained

  // Served over HTTP like the agent does.
  CpuProfiler cpu(
      []() -> absl::StatusOr<std::unique_ptr<CpuSampler>> {
        return std::unique_ptr<CpuSampler>(new ::pprof_sidecar::testing::FakeCpuSampler({}));
      },
      &symbolizer, 100);
  ProcessInfo info;
  info.pid = t.pid();
  info.comm = "heap_c_split";
  TargetView view{[info]() -> std::optional<ProcessInfo> { return info; },
                  [] { return std::string("test"); }};
  ProfileRegistry registry;
  CpuSource cpu_source(&cpu);
  ASSERT_TRUE(registry.AddUnowned(&cpu_source).ok());
  ASSERT_TRUE(AddHeapSources(&heap, &registry).ok());
  PprofServer server(&registry, &symbolizer, view, ServerOptions());
  ASSERT_TRUE(server.Bind("127.0.0.1", 0).ok());
  std::thread serve([&server] { (void)server.Serve(); });
  httplib::Client cli("127.0.0.1", server.port());
  auto res = cli.Get("/debug/pprof/allocs");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const std::string allocs_path = Save(dir + "/allocs.pb.gz", res->body);
  auto metrics = cli.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_TRUE(absl::StrContains(metrics->body, "pprof_sidecar_malloc_sampled_total"))
      << metrics->body;
  EXPECT_TRUE(absl::StrContains(metrics->body,
                                "pprof_sidecar_malloc_lost_total{reason=\"live_map_full\"} 0"))
      << metrics->body;

  auto s = SummarizeProfile(allocs_path);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->sample_types.size(), 4u);
  EXPECT_EQ(s->sample_types[1].type, "alloc_space");
  EXPECT_EQ(s->sample_types[3].type, "inuse_space");
  EXPECT_EQ(s->default_sample_type, "alloc_space");
  EXPECT_EQ(s->period_type.type, "space");
  EXPECT_EQ(s->period, kRate);
  const double big = Flat(*s, "big_site", 1), small = Flat(*s, "small_site", 1);
  const double truth_total = truth.big + truth.small;
  EXPECT_NEAR(big / (big + small), static_cast<double>(truth.big) / truth_total, 0.05) << s->raw;
  EXPECT_NEAR((big + small) / truth_total, 1.0, 0.10);
  EXPECT_NEAR(static_cast<double>(s->totals[1]) / truth_total, 1.0, 0.10);
  // inuse: one iteration in 8 kept live.
  const double inuse = Flat(*s, "big_site", 3) + Flat(*s, "small_site", 3);
  const double truth_live = truth.live_big + truth.live_small;
  EXPECT_NEAR(inuse / truth_live, 1.0, 0.20);
  bool drops_comment = false;
  for (const auto& c : s->comments) drops_comment |= absl::StrContains(c, "live map full 0");
  EXPECT_TRUE(drops_comment);

  auto top = RunCommand(
      absl::StrCat("go tool pprof -top -sample_index=alloc_space '", allocs_path, "' 2>&1"));
  EXPECT_EQ(top.exit_code, 0) << top.output;
  EXPECT_TRUE(absl::StrContains(top.output, "big_site")) << top.output;
  EXPECT_TRUE(absl::StrContains(top.output, "small_site")) << top.output;

  // inuse follows frees.
  ASSERT_EQ(t.Command("free"), "freed");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  res = cli.Get("/debug/pprof/heap");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  auto h = SummarizeProfile(Save(dir + "/heap.pb.gz", res->body));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->default_sample_type, "");  // heap: tools default to the last type, inuse_space
  const double inuse_after = Flat(*h, "big_site", 3) + Flat(*h, "small_site", 3);
  EXPECT_LT(inuse_after, 0.02 * inuse) << inuse_after << " vs " << inuse;
  EXPECT_NEAR(Flat(*h, "big_site", 1), big, 0.02 * big);  // alloc totals stay

  // Delta: only what was allocated during the window.
  std::thread more([&t] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    t.Command(absl::StrCat("alloc ", kIters / 4));
  });
  res = cli.Get("/debug/pprof/allocs?seconds=3");
  more.join();
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  auto d = SummarizeProfile(Save(dir + "/delta.pb.gz", res->body));
  ASSERT_TRUE(d.ok()) << d.status();
  const double delta_big = Flat(*d, "big_site", 1);
  EXPECT_NEAR(delta_big / (truth.big / 4.0), 1.0, 0.2);

  server.Stop();
  serve.join();
  // Detached when the target goes away.
  heap.SetTarget(std::nullopt);
  EXPECT_FALSE(heap.stats().native_attached);
  EXPECT_EQ(PerfEventFds(), perf_fds_before);
}

TEST(MallocSamplerBpfTest, SplitTotalsInuseAndDetachThroughSessions) {
  SplitTotalsInuseAndDetach(true);
}

TEST(MallocSamplerBpfTest, SplitTotalsInuseAndDetachThroughUprobePairs) {
  SplitTotalsInuseAndDetach(false);
}

constexpr char kLibDir[] = "/usr/lib/x86_64-linux-gnu";

// The allocs profile of the sampler `heap` holds for `pid`, saved to `path` and summarized.
PprofSummary CollectAllocs(HeapProfiler& heap, pid_t pid, const std::string& path) {
  HeapRequest req;
  req.kind = HeapProfileKind::kAllocs;
  auto prof = heap.Collect(pid, req);
  EXPECT_TRUE(prof.ok()) << prof.status();
  if (!prof.ok()) return {};
  auto s = SummarizeProfile(Save(path, *prof));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : PprofSummary{};
}

// A HeapProfiler serving non-Go targets from malloc samplers at `sample_bytes`, attached to
// `pid` now; stacks unwound from `stack_copy_bytes` of stack as the agent does (0: frame
// pointers only).
struct NativeHeap {
  ProcessSymbolizer symbolizer;
  HeapProfiler heap{&symbolizer};
  NativeHeap(pid_t pid, int64_t sample_bytes, uint32_t stack_copy_bytes = 8192) {
    MallocSamplerOptions opts;
    opts.sample_bytes = sample_bytes;
    opts.symbolizer = &symbolizer;
    opts.stack_copy_bytes = stack_copy_bytes;
    heap.EnableNative([opts](pid_t p) { return StartMallocSampler(p, opts); }, kAttachNow);
    heap.SetTarget(pid);
  }
};

uint64_t LateBytes(const std::string& line) {
  uint64_t v = 0;
  if (!absl::StartsWith(line, "latedone ") || !absl::SimpleAtoi(line.substr(9), &v)) {
    ADD_FAILURE() << "unexpected reply: " << line;
  }
  return v;
}

// An executable that defines malloc & co itself (like a static tcmalloc/jemalloc) and forwards
// to glibc: its own functions are probed, and glibc's, reached from them by (tail) calls, are
// not counted a second time.
TEST(MallocSamplerBpfTest, AllocatorDefinedByTheExecutable) {
  const std::string dir = MakeTempDir("malloc_own");
  auto bin = BuildNative({TestDataDir() + "/targets/heap_c_split/heap_c_split.c",
                          TestDataDir() + "/targets/heap_c_own_malloc/own_malloc.c"},
                         "-O2 -g -fno-omit-frame-pointer -fno-builtin", dir + "/own_malloc");
  ASSERT_TRUE(bin.ok()) << bin.status();
  CTarget t;
  ASSERT_TRUE(t.Start(*bin));
  auto maps = ReadProcMaps(t.pid());
  ASSERT_TRUE(maps.ok());
  auto probes = FindAllocatorProbes(t.pid(), *maps);
  ASSERT_TRUE(probes.ok()) << probes.status();
  std::set<std::string> in_exe;
  for (const auto& p : *probes) {
    if (p.mapped == *bin) in_exe.insert(p.function);
  }
  EXPECT_EQ(in_exe, (std::set<std::string>{"malloc", "calloc", "realloc", "memalign",
                                           "aligned_alloc", "free"}));

  // 16 KiB: ~1,900 samples at small_site (1000-byte callocs), so the estimate's relative SD is
  // ~2.3 % and the 15 % bound below is ~6.5 sigma, while counting twice would be +100 %.
  NativeHeap nh(t.pid(), 16 * 1024);
  HeapProfiler& heap = nh.heap;
  ASSERT_TRUE(heap.stats().native_attached);
  const Truth truth = ParseDone(t.Command("alloc 32768"));  // 128 MiB
  ASSERT_GT(truth.big, 0u);
  const PprofSummary s = CollectAllocs(heap, t.pid(), dir + "/allocs.pb.gz");
  // Counted once: within 15 % of the truth at each site (twice would be ~+100 %).
  EXPECT_NEAR(static_cast<double>(Flat(s, "big_site", 1)) / truth.big, 1.0, 0.15) << s.raw;
  EXPECT_NEAR(static_cast<double>(Flat(s, "small_site", 1)) / truth.small, 1.0, 0.15) << s.raw;
  EXPECT_GT(heap.stats().native.nested, 60000u);  // every forwarded call seen as nested
}

// A target built without frame pointers whose allocations all go through wrappers (xmalloc,
// xcalloc): the sampled allocations' stacks are unwound with CFI from their stack copy, so the
// callers of the wrappers and their callers up to main are found; with frame pointers only they
// are lost (the contrast shows what the copy buys).
TEST(MallocSamplerBpfTest, WholeStacksWithoutFramePointersThroughAWrapper) {
  const std::string dir = MakeTempDir("malloc_nofp");
  auto bin = BuildNative({TestDataDir() + "/targets/heap_c_nofp/heap_c_nofp.c"},
                         "-O2 -g -fomit-frame-pointer -fno-builtin", dir + "/heap_c_nofp");
  ASSERT_TRUE(bin.ok()) << bin.status();
  for (const uint32_t copy : {8192u, 0u}) {
    CTarget t;
    ASSERT_TRUE(t.Start(*bin));
    NativeHeap nh(t.pid(), 16 * 1024, copy);
    ASSERT_TRUE(nh.heap.stats().native_attached);
    uint64_t fill = 0, index = 0;
    const std::string done = t.Command("alloc 40000");  // 160 MB: ~9,800 samples
    ASSERT_EQ(sscanf(done.c_str(), "done %lu %lu", &fill, &index), 2) << done;
    const PprofSummary s =
        CollectAllocs(nh.heap, t.pid(), absl::StrCat(dir, "/allocs-", copy, ".pb.gz"));
    const double fill_share = CumShare(s, "cache_fill", 1), main_share = CumShare(s, "main", 1);
    if (copy == 0) {
      EXPECT_LT(fill_share, 0.5) << "frame pointers alone found the callers?\n" << s.raw;
      continue;
    }
    // ~7,300 samples under cache_fill, ~2,400 under index_build: SD ~1.2 % and ~2 %.
    EXPECT_NEAR(fill_share * s.totals[1] / fill, 1.0, 0.1) << s.raw;
    EXPECT_NEAR(CumShare(s, "index_build", 1) * s.totals[1] / index, 1.0, 0.1) << s.raw;
    EXPECT_GT(CumShare(s, "dispatch", 1), 0.99) << s.raw;
    EXPECT_GT(main_share, 0.99) << s.raw;
    EXPECT_GT(CumShare(s, "xmalloc", 1), 0.7) << s.raw;  // the wrapper is the leaf frame
    const MallocSamplerStats st = nh.heap.stats().native;
    EXPECT_GT(st.unwound, 0.99 * st.recorded)
        << st.recorded << " recorded, " << st.ringbuf_drops << " dropped";
    printf("recorded %lu unwound %lu ring drops %lu\n", st.recorded, st.unwound, st.ringbuf_drops);
  }
}

// C++ without frame pointers: allocations through libstdc++'s operator new keep their callers
// (make_order, make_index, serve, main) past operator new, in the 3:1 proportion of the bytes;
// >= 90 % of inuse_space is under the functions that asked for it, not operator new alone.
TEST(MallocSamplerBpfTest, CppOperatorNewKeepsItsCallers) {
  const std::string dir = MakeTempDir("malloc_cpp");
  auto bin = BuildNative({TestDataDir() + "/targets/heap_cpp_nofp/heap_cpp_nofp.cc"},
                         "-O2 -g -fomit-frame-pointer", dir + "/heap_cpp_nofp");
  ASSERT_TRUE(bin.ok()) << bin.status();
  CTarget t;
  ASSERT_TRUE(t.Start(*bin));
  NativeHeap nh(t.pid(), 16 * 1024);
  ASSERT_TRUE(nh.heap.stats().native_attached);
  uint64_t order = 0, index = 0, live_order = 0, live_index = 0;
  const std::string done = t.Command("alloc 40000");  // 160 MB, 40 MB of it kept live
  ASSERT_EQ(sscanf(done.c_str(), "done %lu %lu %lu %lu", &order, &index, &live_order, &live_index),
            4)
      << done;
  const PprofSummary s = CollectAllocs(nh.heap, t.pid(), dir + "/allocs.pb.gz");
  // inuse_space: ~1,800 and ~600 live samples (SD 2.3 % and 4 %).
  const double inuse_order = CumShare(s, "make_order", 3),
               inuse_index = CumShare(s, "make_index", 3);
  EXPECT_GE(inuse_order + inuse_index, 0.9) << s.raw;
  EXPECT_NEAR(inuse_order * s.totals[3] / live_order, 1.0, 0.15) << s.raw;
  EXPECT_NEAR(inuse_index * s.totals[3] / live_index, 1.0, 0.15) << s.raw;
  // ~7,300 and ~2,400 samples: SD ~1.2 % and ~2 %.
  EXPECT_NEAR(CumShare(s, "make_order", 1) * s.totals[1] / order, 1.0, 0.1) << s.raw;
  EXPECT_NEAR(CumShare(s, "make_index", 1) * s.totals[1] / index, 1.0, 0.1) << s.raw;
  EXPECT_GT(CumShare(s, "serve", 1), 0.99) << s.raw;
  EXPECT_GT(CumShare(s, "main", 1), 0.99) << s.raw;
  EXPECT_GT(CumShare(s, "operator new", 1), 0.99) << s.raw;
}

// A shared-library allocator preloaded into the target (jemalloc, as LD_PRELOAD deployments of
// it do): its functions serve the target's malloc calls and are the ones probed.
TEST(MallocSamplerBpfTest, PreloadedJemalloc) {
  const std::string lib = absl::StrCat(kLibDir, "/libjemalloc.so.2");
  ASSERT_EQ(access(lib.c_str(), R_OK), 0) << lib << " missing: scripts/install-deps.sh installs it";
  const std::string dir = MakeTempDir("malloc_jemalloc");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir), {"LD_PRELOAD=" + lib}));
  NativeHeap nh(t.pid(), 16 * 1024);
  HeapProfiler& heap = nh.heap;
  ASSERT_TRUE(heap.stats().native_attached);
  const Truth truth = ParseDone(t.Command("alloc 32768"));
  ASSERT_GT(truth.big, 0u);
  const PprofSummary s = CollectAllocs(heap, t.pid(), dir + "/allocs.pb.gz");
  EXPECT_TRUE(absl::StrContains(s.raw, "malloc@" + lib)) << s.raw;
  EXPECT_TRUE(absl::StrContains(s.raw, "free@" + lib)) << s.raw;
  // ~5,500 samples at big_site, ~1,900 at small_site: SD 1.4 % and 2.3 %.
  const double big = Flat(s, "big_site", 1), small = Flat(s, "small_site", 1);
  EXPECT_NEAR(big / truth.big, 1.0, 0.15) << s.raw;
  EXPECT_NEAR(small / truth.small, 1.0, 0.15) << s.raw;
  EXPECT_NEAR(big / (big + small), 0.75, 0.05) << s.raw;
}

// mimalloc's malloc copies its size argument from rdi to rsi and overwrites rdi before its first
// branch: the probe sits on that branch (emulated) and reads the size from rsi through the
// probe's cookie. Sampled bytes per site must match the truth (a wrong register would not).
TEST(MallocSamplerBpfTest, PreloadedMimallocThroughMovedArguments) {
  const std::string lib = absl::StrCat(kLibDir, "/libmimalloc.so.2");
  ASSERT_EQ(access(lib.c_str(), R_OK), 0) << lib << " missing: scripts/install-deps.sh installs it";
  const std::string dir = MakeTempDir("malloc_mimalloc");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir), {"LD_PRELOAD=" + lib}));
  NativeHeap nh(t.pid(), 16 * 1024);
  ASSERT_TRUE(nh.heap.stats().native_attached);
  const Truth truth = ParseDone(t.Command("alloc 32768"));
  ASSERT_GT(truth.big, 0u);
  const PprofSummary s = CollectAllocs(nh.heap, t.pid(), dir + "/allocs.pb.gz");
  // The comments list "malloc@<path>[+skip][ (single-stepped)], ...".
  const size_t at = s.raw.find(" malloc@" + lib);
  ASSERT_NE(at, std::string::npos) << s.raw;
  const std::string entry = s.raw.substr(at, s.raw.find(',', at) - at);
  EXPECT_FALSE(absl::StrContains(entry, "single-stepped")) << entry;
  EXPECT_TRUE(absl::StrContains(entry, "+")) << entry;  // moved past the entry
  // ~5,500 samples at big_site, ~1,900 at small_site: SD 1.4 % and 2.3 %.
  const double big = Flat(s, "big_site", 1), small = Flat(s, "small_site", 1);
  EXPECT_NEAR(big / truth.big, 1.0, 0.15) << s.raw;
  EXPECT_NEAR(small / truth.small, 1.0, 0.15) << s.raw;
}

// An allocator library loaded after the attach (dlopen): probed at the next check of the target
// (HeapProfiler::SetTarget with the same pid, as the agent's tracker calls it every 500 ms); what
// it allocated before that is not seen.
TEST(MallocSamplerBpfTest, AllocatorLoadedAfterAttach) {
  // tcmalloc: jemalloc cannot be dlopen'ed (its TLS is initial-exec).
  const std::string lib = absl::StrCat(kLibDir, "/libtcmalloc_minimal.so.4");
  ASSERT_EQ(access(lib.c_str(), R_OK), 0) << lib << " missing: scripts/install-deps.sh installs it";
  const std::string dir = MakeTempDir("malloc_late");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir)));
  NativeHeap nh(t.pid(), 16 * 1024);
  HeapProfiler& heap = nh.heap;
  ASSERT_TRUE(heap.stats().native_attached);
  const uint64_t probes_before = heap.stats().native.probes;
  heap.SetTarget(t.pid());  // nothing new mapped: nothing attached
  EXPECT_EQ(heap.stats().native_late_probes, 0u);

  ASSERT_EQ(t.Command("dlopen " + lib), "loaded");
  const uint64_t first = LateBytes(t.Command("late 20000"));  // 60 MB, not probed yet
  ASSERT_GT(first, 0u);
  PprofSummary s = CollectAllocs(heap, t.pid(), dir + "/before.pb.gz");
  EXPECT_EQ(Flat(s, "late_site", 1), 0) << s.raw;

  // The tracker's next checks (rechecks are spaced by 1000x their duration: tens of ms here).
  for (int i = 0; i < 30 && heap.stats().native_late_probes == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    heap.SetTarget(t.pid());
  }
  // malloc, calloc, realloc, posix_memalign, memalign (= aligned_alloc), valloc, pvalloc, free.
  EXPECT_GE(heap.stats().native_late_probes, 8u);
  EXPECT_GT(heap.stats().native.probes, probes_before);
  const uint64_t late = LateBytes(t.Command("late 20000")) - first;
  s = CollectAllocs(heap, t.pid(), dir + "/after.pb.gz");
  EXPECT_TRUE(absl::StrContains(s.raw, "malloc@" + lib)) << s.raw;
  // ~3,300 samples: SD 1.7 %.
  EXPECT_NEAR(static_cast<double>(Flat(s, "late_site", 1)) / late, 1.0, 0.15) << s.raw;
  // Each block is freed at once: nothing of late_site stays in use.
  EXPECT_EQ(Flat(s, "late_site", 3), 0) << s.raw;

  const uint64_t late_probes = heap.stats().native_late_probes;
  heap.SetTarget(t.pid());
  EXPECT_EQ(heap.stats().native_late_probes, late_probes);  // probed once
}

// CPU stacks of a target the malloc sampler probes keep their callers in the allocator:
//  - until a probed call returns, its return address on the stack is the uretprobe trampoline;
//    the CPU sampler records the real addresses (the kernel's utask->return_instances) and the
//    unwinder puts them back;
//  - while the kernel runs an entry probe's handlers, the saved user ip is one past the int3 and
//    the probed instruction (free's `push`) has not run: the unwinder starts at the int3.
TEST(MallocSamplerBpfTest, CpuStacksThroughProbedAllocatorCalls) {
  const std::string dir = MakeTempDir("malloc_uret");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir)));
  MallocSamplerOptions opts;
  opts.uprobe_sessions = false;  // a return probe on every call, not only on sampled ones
  auto heap = StartMallocSampler(t.pid(), opts);
  ASSERT_TRUE(heap.ok()) << heap.status();
  auto cpu = NewBpfCpuSampler();
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  std::mutex mu;
  std::vector<StackSample> samples;
  ASSERT_TRUE((*cpu)
                  ->Start(1000,
                          [&](const StackSample& s) {
                            std::lock_guard<std::mutex> l(mu);
                            samples.push_back(s);
                          })
                  .ok());
  ASSERT_TRUE((*cpu)->SetTargets({static_cast<uint32_t>(t.pid())}).ok());
  ASSERT_TRUE(absl::StartsWith(t.Command("alloc 100000"), "done "));
  (*cpu)->Stop();
  ProcessSymbolizer symbolizer;
  SampleUnwinder unwinder(&symbolizer);
  std::unique_ptr<ProcessSymbolizer::Session> session = symbolizer.NewSession(t.pid());
  size_t in_allocator = 0, through_run = 0, with_uret = 0, trampolines = 0;
  std::lock_guard<std::mutex> l(mu);
  for (StackSample& s : samples) {
    with_uret += !s.regs.uret_returns.empty();
    unwinder.Reduce(&s);
    bool allocator = false, run = false;
    for (size_t i = 0; i < s.user_ips.size(); ++i) {
      trampolines += s.regs.uret_trampoline != 0 && s.user_ips[i] == s.regs.uret_trampoline;
      for (const SourceLine& line : session->ResolveUser(s.user_ips[i], i > 0).lines) {
        run |= line.function == "run";
        allocator |=
            absl::StrContains(line.function, "alloc") || absl::StrContains(line.function, "free");
      }
    }
    in_allocator += allocator;
    through_run += allocator && run;
  }
  printf(
      "samples %zu, in the allocator %zu (through run() %zu), in a return-probed call %zu, "
      "trampolines left %zu\n",
      samples.size(), in_allocator, through_run, with_uret, trampolines);
  ASSERT_GT(in_allocator, 50u);
  ASSERT_GT(with_uret, 20u);
  EXPECT_EQ(trampolines, 0u);
  EXPECT_GE(through_run, in_allocator * 9 / 10);
}

TEST(MallocSamplerBpfTest, TargetExitWhileAttached) {
  const std::string dir = MakeTempDir("malloc_exit");
  CTarget t;
  ASSERT_TRUE(t.Start(BuildTarget(dir)));
  const int before = PerfEventFds();
  MallocSamplerOptions opts;
  opts.sample_bytes = 1;  // every allocation
  auto src = StartMallocSampler(t.pid(), opts);
  ASSERT_TRUE(src.ok()) << src.status();
  t.Command("alloc 1000");
  (*src)->Snapshot();  // drains the ring buffer into the user-space state
  MallocSamplerStats st = (*src)->stats();
  EXPECT_GE(st.sampled, 2000u);
  EXPECT_EQ(st.recorded, st.sampled)
      << "failed " << st.failed << " mismatch " << st.pending_mismatch << " pending_full "
      << st.pending_full << " calls " << st.calls;
  // The kept-pointer array starts with realloc(NULL, n), which glibc serves by calling malloc:
  // that inner call is not counted again.
  EXPECT_GE(st.nested, 1u);
  EXPECT_EQ(st.live, 250u + 2);  // 125 iterations x 2 kept, + the kept-pointer and size arrays
  t.Kill();
  src->reset();
  EXPECT_EQ(PerfEventFds(), before);
  // A gone process is a clear NotFound.
  auto again = StartMallocSampler(t.pid() > 0 ? t.pid() : 999999, opts);
  EXPECT_FALSE(again.ok());
}

}  // namespace
}  // namespace pprof_sidecar
