// End-to-end tests of issue 13 (hardening) against the real agent binary: a hostile target
// (its debug file a FIFO), a reused --target_pid, request floods with the agent's memory
// measured, slow and long clients, and SIGTERM during long profile windows. Needs root (BPF,
// chroot, ns_last_pid). Each test starts its own agent on a free port.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

// "VmHWM" or "VmRSS" of `pid` in KiB (-1 if unreadable).
long StatusKb(pid_t pid, const std::string& field) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (!absl::StartsWith(line, field + ":")) continue;
    long kb = -1;
    absl::SimpleAtoi(
        absl::StripAsciiWhitespace(absl::StripSuffix(line.substr(field.size() + 1), " kB")), &kb);
    return kb;
  }
  return -1;
}

// Resets the peak RSS (VmHWM) of `pid` to its current RSS.
void ResetPeak(pid_t pid) { std::ofstream(absl::StrCat("/proc/", pid, "/clear_refs")) << "5"; }

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `head` and then `body_bytes` of filler (as fast as the agent takes them, in 64 KiB
// pieces, never holding them in memory), and returns the agent's answer (status line...).
std::string SendLarge(int port, const std::string& head, size_t body_bytes) {
  int fd = Connect(port);
  if (fd < 0) return "";
  std::string chunk(64 << 10, 'a');
  send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  size_t sent = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < body_bytes ? POLLOUT : 0)), 0};
    if (poll(&p, 1, 100) <= 0) continue;
    if (p.revents & POLLIN) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, n);
    } else if (p.revents & POLLOUT) {
      ssize_t n = send(fd, chunk.data(), std::min(chunk.size(), body_bytes - sent),
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n <= 0) break;
      sent += n;
    } else {
      break;
    }
  }
  close(fd);
  return out;
}

class HardeningTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("hardening"); }
  void TearDown() override {
    if (HasFailure()) {
      for (const auto& a : agents_) {
        printf("---- agent log (port %d) ----\n%s\n", a->port(), a->Log().c_str());
      }
    } else {
      RunCommand(absl::StrCat("rm -rf '", dir_, "'"));
    }
  }
  Agent* StartAgent(const std::vector<std::string>& flags) {
    auto a = Agent::Start(flags, dir_);
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return nullptr;
    agents_.push_back(*std::move(a));
    return agents_.back().get();
  }
  absl::StatusOr<std::unique_ptr<Child>> StartChild(const std::vector<std::string>& argv,
                                                    const std::string& name) {
    return Child::Start(argv, absl::StrCat(dir_, "/", name, ".log"));
  }
  std::optional<absl::Duration> WaitHealthz(const Agent& a, const std::string& needle,
                                            absl::Duration timeout, std::string* last = nullptr) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < timeout) {
      auto r = a.Get("/healthz", absl::Seconds(2));
      if (r.ok()) {
        if (last) *last = r->body;
        if (r->status == 200 && absl::StrContains(r->body, needle)) return absl::Now() - start;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }
  // c_spin burning one thread for `seconds` of CPU, split between spin_hot and spin_cold.
  absl::StatusOr<std::unique_ptr<Child>> StartSpinner(const std::string& name, int seconds) {
    auto bin = BuildNative({TestDataDir() + "/targets/c_spin/c_spin.c"},
                           "-O0 -fno-omit-frame-pointer -pthread", dir_ + "/" + name);
    if (!bin.ok()) return bin.status();
    return StartChild({dir_ + "/" + name, "nowait", "1", absl::StrCat(seconds), "split"}, name);
  }

  std::string dir_;
  std::vector<std::unique_ptr<Agent>> agents_;
};

// ---- 1. A target whose debug file is a FIFO cannot stop the agent. ----

constexpr char kStaticTarget[] = R"(
__attribute__((noinline)) void hostile_marker(volatile unsigned long* x) {
  for (;;) *x += 1;
}
int main(void) {
  volatile unsigned long x = 0;
  hostile_marker(&x);
  return 0;
}
)";

TEST_F(HardeningTest, FifoAsTheTargetsDebugFileDoesNotStopTheAgent) {
  // A static executable without DWARF, run in a chroot whose build-id debug path is a FIFO.
  const std::string src = dir_ + "/hostile.c";
  std::ofstream(src) << kStaticTarget;
  ASSERT_OK_AND_ASSIGN(
      bin, BuildNative({src}, "-static -no-pie -O1 -g -Wl,--build-id", dir_ + "/hostile"));
  const std::string root = dir_ + "/root";
  CommandResult r = RunCommand(absl::StrCat(
      "set -e; objcopy --strip-debug '", bin, "'; id=$(readelf -n '", bin,
      "' | sed -n 's/.*Build ID: //p'); d='", root,
      "'/usr/lib/debug/.build-id/$(echo $id | cut -c1-2); mkdir -p \"$d\"; mkfifo \"$d/$(echo "
      "$id | cut -c3-).debug\"; cp '",
      bin, "' '", root, "/hostile'; ls -l \"$d\""));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto chrooted = [&](const std::string& name) {
    return StartChild({"/usr/sbin/chroot", root, "/hostile"}, name);
  };

  // --target_pid: the agent starts serving, and profiles the target.
  ASSERT_OK_AND_ASSIGN(first, chrooted("hostile1"));
  absl::SleepFor(absl::Milliseconds(200));  // chroot exec'd the target
  auto agent =
      StartAgent({absl::StrCat("--target_pid=", first->pid()), "--malloc_profiling=off"});
  ASSERT_TRUE(agent) << "the agent did not start serving";
  ASSERT_OK_AND_ASSIGN(prof, FetchProfile(agent->port(), 2, dir_ + "/cpu.pb.gz"));
  EXPECT_GT(prof.summary.totals[0], 50);
  EXPECT_GT(prof.summary.funcs.count("hostile_marker"), 0u) << prof.summary.raw;

  // --target_name, agent first: the target's exit and its replacement are noticed, and SIGTERM
  // stops the agent.
  auto by_name = StartAgent({"--target_name=^hostile$", "--malloc_profiling=off"});
  ASSERT_TRUE(by_name);
  std::string last;
  ASSERT_TRUE(
      WaitHealthz(*by_name, absl::StrCat("pid ", first->pid(), " "), absl::Seconds(5), &last))
      << last;
  first->Kill();
  ASSERT_TRUE(WaitHealthz(*by_name, "target: none", absl::Seconds(5), &last)) << last;
  ASSERT_OK_AND_ASSIGN(second, chrooted("hostile2"));
  ASSERT_TRUE(
      WaitHealthz(*by_name, absl::StrCat("pid ", second->pid(), " "), absl::Seconds(5), &last))
      << last;
  ASSERT_OK_AND_ASSIGN(p2, FetchProfile(by_name->port(), 1, dir_ + "/cpu2.pb.gz"));
  EXPECT_GT(p2.summary.totals[0], 20);
  kill(by_name->process().pid(), SIGTERM);
  auto st = by_name->process().WaitExit(absl::Seconds(10));
  ASSERT_TRUE(st.has_value()) << "SIGTERM did not stop the agent";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << *st;
}

// ---- 2. --target_pid and a reused pid. ----

// Starts `argv` exactly at pid `want` (ns_last_pid), retrying while other processes of the
// machine take it first. The child is in its own process group; nullptr if it never got `want`.
std::unique_ptr<Child> StartAtPid(pid_t want, const std::vector<std::string>& argv,
                                  const std::string& log) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    {
      std::ofstream f("/proc/sys/kernel/ns_last_pid");
      f << (want - 1);
    }
    auto c = Child::Start(argv, log);
    if (c.ok() && (*c)->pid() == want) return *std::move(c);
  }
  return nullptr;
}

TEST_F(HardeningTest, TargetPidIsNotFollowedToAProcessReusingIt) {
  ASSERT_OK_AND_ASSIGN(bin, BuildNative({TestDataDir() + "/targets/c_spin/c_spin.c"},
                                        "-O0 -fno-omit-frame-pointer -pthread", dir_ + "/spin"));
  ASSERT_OK_AND_ASSIGN(first, StartChild({bin, "nowait", "1", "300", "split"}, "first"));
  const pid_t pid = first->pid();
  auto agent = StartAgent({absl::StrCat("--target_pid=", pid)});
  ASSERT_TRUE(agent);
  std::string last;
  ASSERT_TRUE(WaitHealthz(*agent, absl::StrCat("pid ", pid, " "), absl::Seconds(5), &last)) << last;
  // The malloc sampler attached to the first process.
  for (int i = 0; i < 100; ++i) {
    auto m = agent->Get("/metrics");
    if (m.ok() && absl::StrContains(m->body, "pprof_sidecar_malloc_sampler_attached 1")) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  first->Kill();
  RunCommand(absl::StrCat("cp '", bin, "' '", dir_, "/newcomer'"));
  auto second =
      StartAtPid(pid, {dir_ + "/newcomer", "nowait", "1", "300", "split"}, dir_ + "/newcomer.log");
  ASSERT_NE(second, nullptr) << "could not start a process at pid " << pid;
  absl::SleepFor(absl::Seconds(2));  // four target checks
  ASSERT_OK_AND_ASSIGN(h, agent->Get("/healthz"));
  EXPECT_TRUE(absl::StrContains(h.body, "target: none")) << h.body;
  EXPECT_TRUE(absl::StrContains(h.body, "another process")) << h.body;
  EXPECT_FALSE(absl::StrContains(h.body, "target: pid")) << h.body;
  ASSERT_OK_AND_ASSIGN(p, agent->Get("/debug/pprof/profile?seconds=1"));
  EXPECT_EQ(p.status, 503) << p.body;
  ASSERT_OK_AND_ASSIGN(m, agent->Get("/metrics"));
  EXPECT_TRUE(absl::StrContains(m.body, "pprof_sidecar_target_pid 0\n")) << m.body;
  EXPECT_TRUE(absl::StrContains(m.body, "pprof_sidecar_malloc_sampler_attached 0\n")) << m.body;
  EXPECT_TRUE(absl::StrContains(m.body, "pprof_sidecar_malloc_probes 0\n")) << m.body;
}

// ---- 3. Oversized requests: the agent's memory stays bounded. ----

TEST_F(HardeningTest, RequestFloodsKeepTheAgentsMemoryBounded) {
  ASSERT_OK_AND_ASSIGN(target, StartSpinner("spin", 300));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  const pid_t apid = agent->process().pid();
  absl::SleepFor(absl::Seconds(1));
  ResetPeak(apid);
  const long base = StatusKb(apid, "VmHWM");
  ASSERT_GT(base, 0);

  // Four 256 MB POSTs to /debug/pprof/symbol at once.
  std::vector<std::future<std::string>> posts;
  for (int i = 0; i < 4; ++i) {
    posts.push_back(std::async(std::launch::async, [&] {
      return SendLarge(agent->port(),
                       "POST /debug/pprof/symbol HTTP/1.1\r\nHost: x\r\nContent-Length: "
                       "268435456\r\n\r\n",
                       size_t{256} << 20);
    }));
  }
  for (auto& p : posts) {
    std::string out = p.get();
    EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 413 ")) << out.substr(0, 200);
  }
  // The same, chunked (no length known in advance).
  std::string chunked = SendLarge(agent->port(),
                                  "POST /debug/pprof/symbol HTTP/1.1\r\nHost: x\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n10000000\r\n",
                                  size_t{256} << 20);
  EXPECT_TRUE(absl::StartsWith(chunked, "HTTP/1.1 413 ")) << chunked.substr(0, 200);
  // Four requests of 100,000 header fields at once.
  std::string fields;
  for (int i = 0; i < 100000; ++i) absl::StrAppend(&fields, "X-Flood-", i, ": yyyyyyyy\r\n");
  std::vector<std::future<std::string>> floods;
  for (int i = 0; i < 4; ++i) {
    floods.push_back(std::async(std::launch::async, [&] {
      return SendLarge(agent->port(), "GET /healthz HTTP/1.1\r\n" + fields + "\r\n", 0);
    }));
  }
  for (auto& f : floods) {
    std::string out = f.get();
    EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 431 ")) << out.substr(0, 200);
  }
  const long peak = StatusKb(apid, "VmHWM");
  printf(
      "agent VmHWM: %ld KiB before, %ld KiB after 5 x 256 MB bodies and 4 x 100k headers "
      "(+%ld KiB); VmRSS now %ld KiB\n",
      base, peak, peak - base, StatusKb(apid, "VmRSS"));
  EXPECT_LT(peak - base, 16 * 1024) << "the agent's peak RSS grew by " << (peak - base) << " KiB";
  ASSERT_OK_AND_ASSIGN(h, agent->Get("/healthz"));
  EXPECT_EQ(h.status, 200);
  ASSERT_OK_AND_ASSIGN(m, agent->Get("/metrics"));
  EXPECT_TRUE(
      absl::StrContains(m.body, "pprof_sidecar_http_rejected_total{reason=\"too_large\"} 9"))
      << m.body;
}

// ---- 4 and 5. Slow and long clients; SIGTERM during 300 s windows. ----

TEST_F(HardeningTest, SlowAndLongClientsLeaveRoomAndSigtermServesCutShortWindows) {
  ASSERT_OK_AND_ASSIGN(target, StartSpinner("spin", 600));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  // 40 clients sending a header byte per second.
  std::vector<int> slow;
  for (int i = 0; i < 40; ++i) slow.push_back(Connect(agent->port()));
  std::atomic<bool> stop{false};
  std::thread dribble;
  // Joined however the test ends (an assertion returns early).
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    std::vector<int>& fds;
    ~Joiner() {
      stop.store(true);
      if (t.joinable()) t.join();
      for (int fd : fds) close(fd);
    }
  } joiner{stop, dribble, slow};
  dribble = std::thread([&] {
    const std::string req =
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for (size_t i = 0; i < req.size() && !stop.load(); ++i) {
      for (int fd : slow) send(fd, &req[i], 1, MSG_NOSIGNAL);
      for (int t = 0; t < 20 && !stop.load(); ++t) absl::SleepFor(absl::Milliseconds(50));
    }
  });
  // 32 profiles of 300 s.
  std::vector<std::future<absl::StatusOr<HttpResponse>>> windows;
  for (int i = 0; i < 32; ++i) {
    windows.push_back(std::async(std::launch::async, [&] {
      return HttpGet(agent->port(), "/debug/pprof/profile?seconds=300", absl::Seconds(330));
    }));
  }
  for (int i = 0; i < 200; ++i) {
    auto m = agent->Get("/metrics");
    if (m.ok() && absl::StrContains(m->body, "pprof_sidecar_cpu_profiles_active 32\n")) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  absl::SleepFor(absl::Seconds(2));
  absl::Duration worst_healthz;
  for (int i = 0; i < 10; ++i) {
    const absl::Time t0 = absl::Now();
    auto h = agent->Get("/healthz", absl::Seconds(5));
    worst_healthz = std::max(worst_healthz, absl::Now() - t0);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->status, 200);
    absl::SleepFor(absl::Milliseconds(100));
  }
  const absl::Time p0 = absl::Now();
  ASSERT_OK_AND_ASSIGN(shortp, FetchProfile(agent->port(), 1, dir_ + "/short.pb.gz"));
  const absl::Duration short_took = absl::Now() - p0;
  printf(
      "40 slow clients + 32 x 300 s windows: /healthz worst of 10 %s; 1 s profile took %s "
      "(%lld samples)\n",
      absl::FormatDuration(worst_healthz).c_str(), absl::FormatDuration(short_took).c_str(),
      static_cast<long long>(shortp.summary.totals[0]));
  EXPECT_LT(worst_healthz, absl::Seconds(1));
  // Its window and the build; generous for a loaded machine (a locked-out server takes 300 s).
  EXPECT_LT(short_took, absl::Seconds(3));
  EXPECT_GT(shortp.summary.totals[0], 20);

  // SIGTERM, ~6 s into the 300 s windows: each is cut short and served, and the agent exits
  // well inside Kubernetes' 30 s grace period.
  const absl::Time t0 = absl::Now();
  kill(agent->process().pid(), SIGTERM);
  auto st = agent->process().WaitExit(absl::Seconds(30));
  const absl::Duration exit_took = absl::Now() - t0;
  ASSERT_TRUE(st.has_value());
  printf("SIGTERM with 32 windows of 300 s open: exited after %s\n",
         absl::FormatDuration(exit_took).c_str());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << *st;
  EXPECT_LT(exit_took, absl::Seconds(5));
  int served = 0;
  for (auto& w : windows) {
    auto r = w.get();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200) << r->body;
    const std::string path = absl::StrCat(dir_, "/cut", served++, ".pb.gz");
    std::ofstream(path, std::ios::binary) << r->body;
    auto sum = SummarizeProfile(path);
    ASSERT_TRUE(sum.ok()) << sum.status();
    EXPECT_GT(sum->totals[0], 100);
    EXPECT_LT(sum->duration_nanos, 60'000'000'000LL);
    bool said = false;
    for (const auto& c : sum->comments) said |= absl::StrContains(c, "cut short");
    EXPECT_TRUE(said) << "no cut-short comment";
  }
  EXPECT_EQ(served, 32);
}

// ---- 6. A target that exec()s during a window. ----

constexpr char kBeforeExec[] = R"(
#include <signal.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}
/* Spins until SIGUSR1, then one more second, then becomes argv[1]. */
__attribute__((noinline)) void before_exec_spin(void) {
  double until = 0;
  for (volatile unsigned long x = 0;; ++x) {
    if (go && until == 0) until = now() + 1.0;
    if (until != 0 && now() > until) return;
  }
}
int main(int argc, char** argv) {
  signal(SIGUSR1, on_usr1);
  before_exec_spin();
  execv(argv[1], argv + 1);
  return 1;
}
)";

constexpr char kAfterExec[] = R"(
__attribute__((noinline)) void after_exec_spin(void) {
  for (volatile unsigned long x = 0;; ++x) {
  }
}
int main(void) {
  after_exec_spin();
  return 0;
}
)";

// Samples taken before the exec are symbolized against the program that was running then, and
// /healthz names the new program.
TEST_F(HardeningTest, ExecDuringAWindowKeepsBothImagesSymbolized) {
  std::ofstream(dir_ + "/before.c") << kBeforeExec;
  std::ofstream(dir_ + "/after.c") << kAfterExec;
  ASSERT_OK_AND_ASSIGN(before, BuildNative({dir_ + "/before.c"}, "-O0 -fno-omit-frame-pointer",
                                           dir_ + "/before_exec"));
  ASSERT_OK_AND_ASSIGN(
      after, BuildNative({dir_ + "/after.c"}, "-O0 -fno-omit-frame-pointer", dir_ + "/after_exec"));
  ASSERT_OK_AND_ASSIGN(target, StartChild({before, after}, "target"));
  auto agent = StartAgent({absl::StrCat("--target_pid=", target->pid())});
  ASSERT_TRUE(agent);
  std::string last;
  ASSERT_TRUE(WaitHealthz(*agent, "(before_exec)", absl::Seconds(5), &last)) << last;
  absl::StatusOr<FetchedProfile> prof;
  std::thread window([&] { prof = FetchProfile(agent->port(), 4, dir_ + "/exec.pb.gz"); });
  absl::SleepFor(absl::Seconds(1));
  kill(target->pid(), SIGUSR1);  // exec in one second
  window.join();
  ASSERT_TRUE(prof.ok()) << prof.status();
  const PprofSummary& s = prof->summary;
  // Each program ran for about half the window (less on a loaded machine, where the window opens
  // late), and nearly every sample is under one of them (before_exec_spin reads the clock: part
  // of its time is in the vDSO), none left <unknown>.
  const double before_share = CumShare(s, "before_exec_spin"),
               after_share = CumShare(s, "after_exec_spin");
  printf("before_exec_spin %.3f, after_exec_spin %.3f of %lld samples (cumulative)\n", before_share,
         after_share, static_cast<long long>(s.totals[0]));
  EXPECT_GT(before_share, 0.05) << s.raw;
  EXPECT_GT(after_share, 0.05) << s.raw;
  EXPECT_GT(before_share + after_share, 0.9) << s.raw;
  ASSERT_TRUE(WaitHealthz(*agent, "(after_exec)", absl::Seconds(3), &last)) << last;
  EXPECT_TRUE(absl::StrContains(last, "exec'd")) << last;
}

}  // namespace
}  // namespace pprof_sidecar::testing
