// Privileged tests of the BPF CPU sampler against a real C target (tests/targets/c_spin) built
// from source with frame pointers. Needs root (BPF + perf events).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/sampler/cpu_sampler.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildNative;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;

constexpr uint64_t kKernelSpaceStart = 0xffff800000000000ULL;

struct Range {
  uint64_t lo = 0, hi = 0;
  bool Contains(uint64_t a) const { return a >= lo && a < hi; }
};

// The c_spin binary (non-PIE, so `nm` addresses are runtime addresses) and its symbols.
struct Target {
  std::string path;
  std::map<std::string, Range> funcs;
};

const Target& SpinTarget() {
  static Target* t = [] {
    auto* t = new Target;
    std::string dir = MakeTempDir("c_spin");
    auto built = BuildNative({TestDataDir() + "/targets/c_spin/c_spin.c"},
                             "-O0 -fno-omit-frame-pointer -no-pie -pthread", dir + "/c_spin");
    if (!built.ok()) {
      fprintf(stderr, "%s\n", std::string(built.status().message()).c_str());
      abort();
    }
    t->path = *built;
    auto nm = RunCommand("nm -S --defined-only '" + t->path + "'");
    for (absl::string_view line : absl::StrSplit(nm.output, '\n')) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() != 4 || (f[2] != "T" && f[2] != "t")) continue;
      Range r;
      uint64_t size;
      if (!absl::SimpleHexAtoi(f[0], &r.lo) || !absl::SimpleHexAtoi(f[1], &size)) continue;
      r.hi = r.lo + size;
      t->funcs[f[3]] = r;
    }
    return t;
  }();
  return *t;
}

// A child process whose stdin is a pipe the test writes to.
struct Child {
  pid_t pid = -1;
  int stdin_fd = -1;

  void Release() {
    if (stdin_fd >= 0) {
      ASSERT_EQ(write(stdin_fd, "g", 1), 1);
      close(stdin_fd);
      stdin_fd = -1;
    }
  }
  // Reaps the child; returns its (and its reaped descendants') CPU seconds.
  double Wait(int* status_out = nullptr) {
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof(ru));
    EXPECT_EQ(wait4(pid, &status, 0, &ru), pid);
    pid = -1;
    if (status_out) *status_out = status;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
  }
  void Kill() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      Wait();
    }
    if (stdin_fd >= 0) close(stdin_fd);
    stdin_fd = -1;
  }
};

Child Spawn(const std::vector<std::string>& argv) {
  int p[2];
  if (pipe(p) != 0) abort();
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    dup2(p[0], 0);
    close(p[0]);
    close(p[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(p[0]);
  c.stdin_fd = p[1];
  return c;
}

std::set<uint32_t> Tids(pid_t pid) {
  std::set<uint32_t> out;
  DIR* d = opendir(absl::StrCat("/proc/", pid, "/task").c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    uint32_t tid;
    if (absl::SimpleAtoi(e->d_name, &tid)) out.insert(tid);
  }
  closedir(d);
  return out;
}

// The r-xp mapping of `path` in /proc/pid/maps.
Range ExecMapping(pid_t pid, const std::string& path) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/maps"));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 6 || f[1] != "r-xp" || f[5] != path) continue;
    std::vector<std::string> ab = absl::StrSplit(f[0], '-');
    Range r;
    if (absl::SimpleHexAtoi(ab[0], &r.lo) && absl::SimpleHexAtoi(ab[1], &r.hi)) return r;
  }
  return Range();
}

// Counts this process's fds whose link target is exactly `what` (e.g. "anon_inode:bpf_link").
int CountFds(const std::string& what) {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) {
    char buf[256];
    ssize_t len = readlink(absl::StrCat("/proc/self/fd/", e->d_name).c_str(), buf, sizeof(buf));
    if (len > 0 && std::string(buf, len) == what) ++n;
  }
  closedir(d);
  return n;
}

class Collector {
 public:
  CpuSampler::Sink sink() {
    return [this](const StackSample& s) {
      std::lock_guard<std::mutex> l(mu_);
      samples_.push_back(s);
    };
  }
  std::vector<StackSample> samples() {
    std::lock_guard<std::mutex> l(mu_);
    return samples_;
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu_);
    return samples_.size();
  }

 private:
  std::mutex mu_;
  std::vector<StackSample> samples_;
};

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

using Clock = BpfCpuSamplerOptions::Clock;

const char* ClockName(Clock c) {
  switch (c) {
    case Clock::kAuto:
      return "auto";
    case Clock::kTick:
      return "tick";
    case Clock::kPerfCpuClock:
      return "perf";
  }
  return "?";
}

// Kernel text symbols from /proc/kallsyms, to name the function holding a kernel address.
class KernelSymbols {
 public:
  KernelSymbols() {
    std::ifstream in("/proc/kallsyms");
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
      uint64_t a;
      if (f.size() < 3 || !absl::SimpleHexAtoi(f[0], &a) || a == 0) continue;
      syms_[a] = f[2];
    }
  }
  std::string Name(uint64_t ip) const {
    auto it = syms_.upper_bound(ip);
    if (it == syms_.begin()) return "";
    return std::prev(it)->second;
  }
  uint64_t Address(const std::string& name) const {
    for (const auto& [a, n] : syms_) {
      if (n == name) return a;
    }
    return 0;
  }
  bool empty() const { return syms_.empty(); }

 private:
  std::map<uint64_t, std::string> syms_;
};

using Variant = BpfCpuSamplerOptions::Variant;

struct RateCase {
  int hz;
  Clock clock;
  Variant variant = Variant::kAuto;  // kCompat: the program for kernels < 5.17, forced here
};

class SamplerRateTest : public ::testing::TestWithParam<RateCase> {};

// A 2-thread target spinning 75/25 in spin_hot/spin_cold while a non-target copy spins too.
// Sample weights (periods per sample) sum to hz x the target's CPU seconds.
TEST_P(SamplerRateTest, SamplesOnlyTargetWithTrueProportions) {
  const int hz = GetParam().hz;
  const Target& t = SpinTarget();
  ASSERT_TRUE(t.funcs.count("spin_hot") && t.funcs.count("spin_cold") && t.funcs.count("worker"));
  BpfCpuSamplerOptions opts;
  opts.expected_hz = hz;  // ring buffer sized for this rate, as the agent does
  opts.clock = GetParam().clock;
  opts.variant = GetParam().variant;
  auto sampler = NewBpfCpuSampler(opts);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  if (opts.variant == Variant::kCompat) EXPECT_EQ((*sampler)->info().program_variant, "compat");
  Collector col;
  ASSERT_TRUE((*sampler)->Start(hz, col.sink()).ok());
  // auto: the tick up to 100 Hz, cpu-clock events above.
  const bool want_tick = opts.clock == Clock::kTick || (opts.clock == Clock::kAuto && hz <= 100);
  EXPECT_EQ((*sampler)->stats().tick_clock, want_tick);

  Child other = Spawn({t.path, "nowait", "1", "30", "split"});
  // ~2,000 sample records in all (2 threads): the 0.75 split's binomial SD is then 0.0097, so
  // +-5 pp is 5 sigma (600 records, as before, made it 2.8). The tick clock records at most
  // CONFIG_HZ (250 here) samples per second, weighting each for the periods it covers.
  const char* seconds = hz < 1000 ? "10" : opts.clock == Clock::kTick ? "4" : "1.5";
  Child target = Spawn({t.path, "wait", "2", seconds, "split"});
  SleepMs(150);  // threads created, blocked on stdin
  const std::set<uint32_t> tids = Tids(target.pid);
  ASSERT_EQ(tids.size(), 3u);
  const Range text = ExecMapping(target.pid, t.path);
  ASSERT_GT(text.hi, text.lo);
  ASSERT_TRUE((*sampler)->SetTargets({static_cast<uint32_t>(target.pid)}).ok());
  target.Release();
  int status;
  const pid_t target_pid = target.pid;
  const pid_t other_pid = other.pid;
  const double cpu_s = target.Wait(&status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  (*sampler)->Stop();
  other.Kill();

  const std::vector<StackSample> samples = col.samples();
  const double expected = hz * cpu_s;
  uint64_t in_text = 0, hot = 0, cold = 0, caller_ok = 0, with_user = 0, weight = 0, records = 0;
  for (const StackSample& s : samples) {
    ASSERT_EQ(s.pid, static_cast<uint32_t>(target_pid));
    ASSERT_NE(s.pid, static_cast<uint32_t>(other_pid));
    ASSERT_TRUE(tids.count(s.tid)) << s.tid;
    ASSERT_GE(s.weight, 1u);
    if (!want_tick) ASSERT_EQ(s.weight, 1u);
    weight += s.weight;
    ++records;
    if (s.user_ips.empty()) continue;
    with_user += s.weight;
    const uint64_t leaf = s.user_ips[0];
    if (text.Contains(leaf)) in_text += s.weight;
    const bool is_hot = t.funcs.at("spin_hot").Contains(leaf);
    const bool is_cold = t.funcs.at("spin_cold").Contains(leaf);
    hot += is_hot * s.weight;
    cold += is_cold * s.weight;
    if ((is_hot || is_cold) && s.user_ips.size() >= 2 &&
        t.funcs.at("worker").Contains(s.user_ips[1])) {
      caller_ok += s.weight;
    }
  }
  printf(
      "hz=%d clock=%s cpu=%.3fs records=%llu weight=%llu expected=%.0f hot=%llu cold=%llu "
      "in_text=%llu\n",
      hz, ClockName(opts.clock), cpu_s, static_cast<unsigned long long>(records),
      static_cast<unsigned long long>(weight), expected, static_cast<unsigned long long>(hot),
      static_cast<unsigned long long>(cold), static_cast<unsigned long long>(in_text));
  // One short window on a shared 2-vCPU VM loses up to ~15% of timer ticks while still charging
  // the time to the target; the issue's ±10% is asserted over several windows by the
  // end-to-end test (tests/e2e). Here: the count tracks CPU time, not wall time or another rate.
  EXPECT_NEAR(weight, expected, expected * 0.20);
  EXPECT_GE(with_user, weight * 95 / 100);
  EXPECT_GE(in_text, with_user * 90 / 100);
  ASSERT_GT(hot + cold, 0u);
  EXPECT_NEAR(static_cast<double>(hot) / (hot + cold), 0.75, 0.05);
  EXPECT_GE(caller_ok, (hot + cold) * 90 / 100);

  const SamplerStats st = (*sampler)->stats();
  EXPECT_EQ(st.samples_delivered + st.dropped_ringbuf_full + st.samples_after_stop,
            st.samples_seen);
  EXPECT_EQ(st.samples_delivered, records);
  EXPECT_EQ(st.dropped_ringbuf_full, 0u);
  EXPECT_EQ(st.tick_state_errors, 0u);
}

// 1000 Hz at the tick: weighted samples at the tick rate (HZ <= 1000).
INSTANTIATE_TEST_SUITE_P(
    Rates, SamplerRateTest,
    ::testing::Values(RateCase{100, Clock::kAuto}, RateCase{100, Clock::kPerfCpuClock},
                      RateCase{1000, Clock::kAuto}, RateCase{1000, Clock::kTick},
                      RateCase{100, Clock::kAuto, Variant::kCompat},
                      RateCase{100, Clock::kPerfCpuClock, Variant::kCompat}),
    [](const ::testing::TestParamInfo<RateCase>& i) {
      return absl::StrCat(i.param.hz, "Hz_", ClockName(i.param.clock),
                          i.param.variant == Variant::kCompat ? "_compat" : "");
    });

class KernelStackTest : public ::testing::TestWithParam<std::pair<Clock, Variant>> {};

// Kernel stacks start at the interrupted kernel code: at the tick, the interrupt's own frames
// (entry stub, hrtimer handlers, the tracepoint) are stripped. Counts stacks with frames of
// the timer interrupt's path.
TEST_P(KernelStackTest, KernelStacksForSyscallHeavyTarget) {
  const Target& t = SpinTarget();
  const KernelSymbols ksyms;
  ASSERT_FALSE(ksyms.empty());
  const uint64_t irqentry_lo = ksyms.Address("__irqentry_text_start");
  const uint64_t irqentry_hi = ksyms.Address("__irqentry_text_end");
  ASSERT_LT(irqentry_lo, irqentry_hi);
  BpfCpuSamplerOptions opts;
  opts.clock = GetParam().first;
  opts.variant = GetParam().second;
  auto sampler = NewBpfCpuSampler(opts);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  Collector col;
  const bool tick = GetParam().first == Clock::kTick;
  ASSERT_TRUE((*sampler)->Start(tick ? 100 : 1000, col.sink()).ok());
  ASSERT_EQ((*sampler)->stats().tick_clock, tick);
  Child target = Spawn({t.path, "wait", "1", tick ? "3" : "0.5", "syscall"});
  SleepMs(100);
  ASSERT_TRUE((*sampler)->SetTargets({static_cast<uint32_t>(target.pid)}).ok());
  target.Release();
  target.Wait();
  (*sampler)->Stop();

  size_t in_kernel = 0, kstack_ok = 0, ustack_ok = 0, irq_frames = 0, read_path = 0;
  const std::vector<StackSample> samples = col.samples();
  for (const StackSample& s : samples) {
    if (!s.in_kernel) {
      EXPECT_TRUE(s.kernel_ips.empty());
      continue;
    }
    ++in_kernel;
    bool all_kernel = !s.kernel_ips.empty();
    bool reads = false, irq = false;
    for (uint64_t ip : s.kernel_ips) {
      all_kernel &= ip >= kKernelSpaceStart;
      const std::string name = ksyms.Name(ip);
      if ((ip >= irqentry_lo && ip < irqentry_hi) || name == "hrtimer_interrupt" ||
          name == "__hrtimer_run_queues" || name == "__sysvec_apic_timer_interrupt") {
        irq = true;
      }
      reads |= name == "ksys_read" || name == "vfs_read";
    }
    kstack_ok += all_kernel;
    read_path += reads;
    irq_frames += irq;
    // The user side of a kernel-mode sample comes from the saved user registers.
    if (!s.user_ips.empty() && s.user_ips[0] < kKernelSpaceStart && s.regs.sp != 0 &&
        s.user_ips[0] == s.regs.ip) {
      ++ustack_ok;
    }
  }
  printf(
      "clock=%s samples=%zu in_kernel=%zu kstack_ok=%zu ustack_ok=%zu read_path=%zu "
      "irq_frames=%zu\n",
      ClockName(GetParam().first), samples.size(), in_kernel, kstack_ok, ustack_ok, read_path,
      irq_frames);
  EXPECT_GE(in_kernel, samples.size() * 30 / 100);
  EXPECT_GE(kstack_ok, in_kernel * 95 / 100);
  EXPECT_GE(ustack_ok, in_kernel * 95 / 100);
  EXPECT_GE(read_path, in_kernel * 80 / 100);
  // Interrupt frames inside a stack are real (an interrupt that the sample interrupted); a tick
  // path left at the top of every tick sample would be in all of them.
  EXPECT_LE(irq_frames, in_kernel / 50 + 1);
  EXPECT_EQ((*sampler)->stats().kernel_stack_errors, 0u);
}

// The compat program finds the user registers of a thread in the kernel without bpf_task_pt_regs.
INSTANTIATE_TEST_SUITE_P(Clocks, KernelStackTest,
                         ::testing::Values(std::make_pair(Clock::kTick, Variant::kAuto),
                                           std::make_pair(Clock::kPerfCpuClock, Variant::kAuto),
                                           std::make_pair(Clock::kTick, Variant::kCompat),
                                           std::make_pair(Clock::kPerfCpuClock, Variant::kCompat)),
                         [](const ::testing::TestParamInfo<std::pair<Clock, Variant>>& i) {
                           return absl::StrCat(ClockName(i.param.first),
                                               i.param.second == Variant::kCompat ? "_compat" : "");
                         });

// The stack copy starts at regs.sp: in spin_hot's body the saved return address at bp+8 must be
// the caller frame that the kernel's frame-pointer walk reported.
TEST(BpfCpuSamplerTest, UserStackCopyMatchesFramePointerWalk) {
  const Target& t = SpinTarget();
  BpfCpuSamplerOptions opts;
  opts.user_stack_bytes = 4096;
  auto sampler = NewBpfCpuSampler(opts);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  Collector col;
  ASSERT_TRUE((*sampler)->Start(1000, col.sink()).ok());
  Child target = Spawn({t.path, "wait", "1", "0.5", "split"});
  SleepMs(100);
  ASSERT_TRUE((*sampler)->SetTargets({static_cast<uint32_t>(target.pid)}).ok());
  target.Release();
  target.Wait();
  (*sampler)->Stop();
  size_t checked = 0, matched = 0, copied = 0;
  const std::vector<StackSample> samples = col.samples();
  for (const StackSample& s : samples) {
    EXPECT_LE(s.user_stack.size(), 4096u);
    copied += !s.user_stack.empty();
    if (s.in_kernel || s.user_ips.size() < 2 || s.regs.ip != s.user_ips[0]) continue;
    if (!t.funcs.at("spin_hot").Contains(s.regs.ip)) continue;
    if (s.regs.bp < s.regs.sp || s.regs.bp - s.regs.sp + 16 > s.user_stack.size()) continue;
    ++checked;
    uint64_t ret;
    memcpy(&ret, s.user_stack.data() + (s.regs.bp - s.regs.sp + 8), sizeof(ret));
    matched += ret == s.user_ips[1];
  }
  printf("samples=%zu copied=%zu checked=%zu matched=%zu\n", samples.size(), copied, checked,
         matched);
  EXPECT_GE(copied, samples.size() * 95 / 100);
  ASSERT_GT(checked, samples.size() / 2);
  EXPECT_GE(matched, checked * 98 / 100);
}

TEST(BpfCpuSamplerTest, SetTargetsEmptyStopsDeliveryAndStopCleansUp) {
  const Target& t = SpinTarget();
  const int links_before = CountFds("anon_inode:bpf_link");
  auto sampler = NewBpfCpuSampler();
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  // Created ready: the tick program is attached (one link for all CPUs), disabled.
  ASSERT_EQ((*sampler)->info().clock, "tick") << (*sampler)->info().tick_unavailable;
  EXPECT_EQ(CountFds("anon_inode:bpf_link") - links_before, 1);
  Collector col;
  EXPECT_FALSE((*sampler)->running());
  ASSERT_TRUE((*sampler)->Start(1000, col.sink()).ok());
  EXPECT_TRUE((*sampler)->running());
  absl::Status again = (*sampler)->Start(100, col.sink());
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  const int ncpus = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(CountFds("anon_inode:bpf_link") - links_before, ncpus + 1);

  Child spinner = Spawn({t.path, "nowait", "1", "30", "split"});
  ASSERT_TRUE((*sampler)->SetTargets({static_cast<uint32_t>(spinner.pid)}).ok());
  SleepMs(500);
  EXPECT_GT(col.size(), 100u);
  ASSERT_TRUE((*sampler)->SetTargets({}).ok());
  SleepMs(200);  // records already in the ring buffer are delivered
  const size_t after_clear = col.size();
  SleepMs(500);
  EXPECT_EQ(col.size(), after_clear);
  // Re-adding resumes delivery, replacing keys works.
  ASSERT_TRUE((*sampler)->SetTargets({static_cast<uint32_t>(spinner.pid), 1}).ok());
  ASSERT_TRUE((*sampler)->SetTargets({static_cast<uint32_t>(spinner.pid)}).ok());
  SleepMs(300);
  EXPECT_GT(col.size(), after_clear + 50);
  EXPECT_EQ((*sampler)->SetTargets({0}).code(), absl::StatusCode::kInvalidArgument);

  (*sampler)->Stop();
  EXPECT_FALSE((*sampler)->running());
  const size_t after_stop = col.size();
  (*sampler)->Stop();
  EXPECT_EQ(CountFds("anon_inode:bpf_link") - links_before, 1);
  EXPECT_EQ(CountFds("anon_inode:[perf_event]"), 0);
  SleepMs(200);
  EXPECT_EQ(col.size(), after_stop);
  const SamplerStats st = (*sampler)->stats();
  EXPECT_EQ(st.samples_delivered + st.dropped_ringbuf_full + st.samples_after_stop,
            st.samples_seen);
  EXPECT_EQ(st.samples_delivered, after_stop);
  EXPECT_EQ(st.cpus, static_cast<uint64_t>(ncpus));

  // Restart after Stop works; at 100 Hz the tick clock: its one link, kept (disabled) after Stop
  // for the next Start, detached with the sampler.
  ASSERT_TRUE((*sampler)->Start(100, col.sink()).ok());
  EXPECT_TRUE((*sampler)->stats().tick_clock);
  EXPECT_EQ(CountFds("anon_inode:bpf_link") - links_before, 1);
  ASSERT_TRUE((*sampler)->SetTargets({static_cast<uint32_t>(spinner.pid)}).ok());
  SleepMs(1000);
  (*sampler)->Stop();
  const size_t after_tick = col.size();
  EXPECT_GT(after_tick, after_stop + 50);  // ~100 from a spinning thread, if it gets the CPU
  EXPECT_EQ(CountFds("anon_inode:bpf_link") - links_before, 1);
  SleepMs(200);
  EXPECT_EQ(col.size(), after_tick);  // disabled: nothing more
  ASSERT_TRUE((*sampler)->Start(100, col.sink()).ok());
  (*sampler)->Stop();
  spinner.Kill();
  sampler->reset();
  EXPECT_EQ(CountFds("anon_inode:bpf_link"), links_before);
}

TEST(BpfCpuSamplerTest, InvalidArguments) {
  auto sampler = NewBpfCpuSampler();
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  EXPECT_EQ((*sampler)->Start(0, [](const StackSample&) {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*sampler)->Start(100, nullptr).code(), absl::StatusCode::kInvalidArgument);
  BpfCpuSamplerOptions bad;
  bad.user_stack_bytes = 7;
  EXPECT_EQ(NewBpfCpuSampler(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = BpfCpuSamplerOptions();
  bad.ringbuf_bytes = 12345;
  EXPECT_EQ(NewBpfCpuSampler(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// A target in its own pid namespace is selected and reported by its pid in ours.
TEST(BpfCpuSamplerTest, TargetInNestedPidNamespace) {
  const Target& t = SpinTarget();
  auto sampler = NewBpfCpuSampler();
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  Collector col;
  ASSERT_TRUE((*sampler)->Start(100, col.sink()).ok());
  Child unshare = Spawn(
      {"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", t.path, "wait", "2", "1", "split"});
  uint32_t inner = 0;
  for (int i = 0; i < 100 && inner == 0; ++i) {
    SleepMs(20);
    std::ifstream in(absl::StrCat("/proc/", unshare.pid, "/task/", unshare.pid, "/children"));
    std::string s;
    if (in >> s) absl::SimpleAtoi(s, &inner);
  }
  ASSERT_NE(inner, 0u);
  SleepMs(100);  // exec'd
  std::ifstream status(absl::StrCat("/proc/", inner, "/status"));
  std::string line, nspid;
  while (std::getline(status, line)) {
    if (line.rfind("NSpid:", 0) == 0) nspid = line;
  }
  std::vector<std::string> ids = absl::StrSplit(nspid, '\t', absl::SkipEmpty());
  ASSERT_EQ(ids.size(), 3u) << nspid;  // "NSpid:", our pid, 1
  EXPECT_EQ(ids[2], "1");
  const std::set<uint32_t> tids = Tids(inner);
  ASSERT_TRUE((*sampler)->SetTargets({inner}).ok());
  unshare.Release();
  const double cpu_s = unshare.Wait();
  (*sampler)->Stop();
  const std::vector<StackSample> samples = col.samples();
  size_t hot = 0, weight = 0;
  for (const StackSample& s : samples) {
    ASSERT_EQ(s.pid, inner);
    ASSERT_TRUE(tids.count(s.tid)) << s.tid;
    weight += s.weight;
    hot += !s.user_ips.empty() && t.funcs.at("spin_hot").Contains(s.user_ips[0]) ? s.weight : 0;
  }
  const double expected = 100 * cpu_s;
  printf("nested ns: cpu=%.3fs samples=%zu weight=%zu hot=%zu\n", cpu_s, samples.size(), weight,
         hot);
  // As in SamplerRateTest: one short window may lose ticks on a shared VM.
  EXPECT_NEAR(weight, expected, expected * 0.20);
  EXPECT_GT(hot, weight / 2);
}

}  // namespace
}  // namespace pprof_sidecar
