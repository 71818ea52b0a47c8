#include "agent/target/target_discovery.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/target/target_tracker.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

// Starts a copy of /bin/sleep under a distinctive name; the copy lets the test check matching on
// both comm and the executable basename.
pid_t StartNamed(const std::string& dir, const std::string& name) {
  std::string exe = dir + "/" + name;
  testing::RunCommand(absl::StrCat("cp /bin/sleep '", exe, "'"));
  pid_t pid = fork();
  if (pid == 0) {
    execl(exe.c_str(), name.c_str(), "60", nullptr);
    _exit(127);
  }
  // Until exec completed and /proc shows the new image (slow on a loaded machine).
  for (int i = 0; i < 500; ++i) {
    auto info = ReadProcessInfo(pid);
    if (info.ok() && info->comm == name.substr(0, 15)) break;
    usleep(10 * 1000);
  }
  return pid;
}

void Kill(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

TEST(TargetDiscoveryTest, ReadsOwnProcess) {
  auto me = ReadProcessInfo(getpid());
  ASSERT_TRUE(me.ok());
  EXPECT_EQ(me->pid, getpid());
  EXPECT_EQ(me->ppid, getppid());
  EXPECT_GT(me->start_time, 0u);
  EXPECT_TRUE(absl::StrContains(me->exe, "target_discovery_test")) << me->exe;
  EXPECT_TRUE(absl::IsNotFound(ReadProcessInfo(999999999).status()));
}

TEST(TargetDiscoveryTest, ByNameExcludesSelfAndPicksLargestWhenAmbiguous) {
  std::string dir = testing::MakeTempDir("discovery");
  pid_t a = StartNamed(dir, "ctrlmgr-a");
  pid_t b = StartNamed(dir, "ctrlmgr-b");
  DiscoveryOptions o;
  o.target_name = "ctrlmgr-a";
  auto d = DiscoverTarget(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->target.pid, a);
  EXPECT_TRUE(d->others.empty());

  o.target_name = "ctrlmgr-.*";
  d = DiscoverTarget(o);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->target.pid == a || d->target.pid == b);
  ASSERT_EQ(d->others.size(), 1u);
  EXPECT_TRUE(absl::StrContains(d->explanation, "ambiguous")) << d->explanation;
  // The hint fits the flags given: --target_name was passed, so it asks for a narrower one.
  EXPECT_FALSE(absl::StrContains(d->explanation, "pass --target_pid or --target_name"))
      << d->explanation;
  EXPECT_TRUE(absl::StrContains(d->explanation, "narrower --target_name")) << d->explanation;
  o.target_name = "";
  d = DiscoverTarget(o);
  if (d.ok() && !d->others.empty()) {
    EXPECT_TRUE(absl::StrContains(d->explanation, "pass --target_pid or --target_name"))
        << d->explanation;
  }
  o.target_name = "ctrlmgr-.*";
  EXPECT_GE(d->target.rss_pages, d->others[0].rss_pages);

  // Our own process is never a target, even when its name matches.
  o.target_name = "target_discovery_test";
  EXPECT_TRUE(absl::IsNotFound(DiscoverTarget(o).status()));
  o.target_name = "(";
  EXPECT_TRUE(absl::IsInvalidArgument(DiscoverTarget(o).status()));
  o.target_name = "";
  o.target_pid = 999999999;
  EXPECT_TRUE(absl::IsNotFound(DiscoverTarget(o).status()));
  o.target_pid = b;
  d = DiscoverTarget(o);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->target.pid, b);
  Kill(a);
  Kill(b);
}

TEST(TargetDiscoveryTest, PauseAndSidecarNames) {
  EXPECT_TRUE(IsPauseOrInit("pause"));
  EXPECT_TRUE(IsPauseOrInit("tini"));
  EXPECT_FALSE(IsPauseOrInit("manager"));
  EXPECT_TRUE(IsKnownSidecar("kube-rbac-proxy"));
  EXPECT_FALSE(IsKnownSidecar("manager"));
}

TEST(TargetTrackerTest, FollowsARestartedTarget) {
  std::string dir = testing::MakeTempDir("tracker");
  pid_t first = StartNamed(dir, "restarty");
  std::vector<pid_t> seen;
  std::mutex mu;
  DiscoveryOptions o;
  o.target_name = "restarty";
  TargetTracker t(o, absl::Milliseconds(100), [&](const std::optional<ProcessInfo>& p) {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back(p ? p->pid : 0);
  });
  std::atomic<int> rechecks_of_first{0}, other_rechecks{0};
  t.SetOnRecheck([&](const std::optional<ProcessInfo>& p) {
    (p && p->pid == first ? rechecks_of_first : other_rechecks).fetch_add(1);
  });
  t.Start();
  ASSERT_TRUE(t.current().has_value());
  EXPECT_EQ(t.current()->pid, first);
  // Every check that keeps the target is reported to on_recheck.
  for (int i = 0; i < 50 && rechecks_of_first.load() < 2; ++i) usleep(100 * 1000);
  EXPECT_GE(rechecks_of_first.load(), 2);
  EXPECT_EQ(other_rechecks.load(), 0);
  Kill(first);
  for (int i = 0; i < 20 && t.current().has_value(); ++i) usleep(100 * 1000);
  EXPECT_FALSE(t.current().has_value());
  EXPECT_TRUE(absl::StrContains(t.status_message(), "restarty")) << t.status_message();
  pid_t second = StartNamed(dir, "restarty");
  for (int i = 0; i < 20 && !t.current().has_value(); ++i) usleep(100 * 1000);
  ASSERT_TRUE(t.current().has_value());
  EXPECT_EQ(t.current()->pid, second);
  // on_change runs on the tracker's worker thread, after current() shows the change.
  EXPECT_TRUE(t.WaitCallbacks(absl::Seconds(5)));
  t.Stop();
  Kill(second);
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(seen, (std::vector<pid_t>{first, 0, second}));
}

// The before-publish hook runs before current() shows the change: when a request sees the
// target, the CPU sampler's filter set up there already follows it.
TEST(TargetTrackerTest, PublishesATargetOnlyAfterTheBeforePublishHookReturned) {
  DiscoveryOptions o;
  o.target_pid = getpid();
  TargetTracker* tracker = nullptr;
  std::vector<bool> published_during_hook;
  TargetTracker t(o, absl::Seconds(10), [](const std::optional<ProcessInfo>&) {});
  t.SetBeforePublish([&](const std::optional<ProcessInfo>& next) {
    ASSERT_TRUE(next.has_value());
    published_during_hook.push_back(tracker->current().has_value());
  });
  tracker = &t;
  t.Start();
  ASSERT_TRUE(t.current().has_value());
  EXPECT_EQ(t.current()->pid, getpid());
  t.Stop();
  EXPECT_EQ(published_during_hook, std::vector<bool>{false});
}

// A target whose maps cannot be read (here: a /proc tree without them, as without
// CAP_SYS_PTRACE) is still tracked, and the tracker's status (shown by /healthz) says what is
// missing.
TEST(TargetTrackerTest, StatusNamesTheCapabilityWhenTheTargetIsUnreadable) {
  const std::string root = testing::MakeTempDir("fakeproc");
  const pid_t pid = getpid();
  testing::RunCommand(absl::StrCat("mkdir -p '", root, "/", pid, "' && cp /proc/self/stat '", root,
                                   "/", pid, "/stat'"));
  EXPECT_TRUE(CheckTargetReadable(pid).ok());
  absl::Status st = CheckTargetReadable(pid, root);
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  DiscoveryOptions o;
  o.target_pid = pid;
  o.proc_root = root;
  TargetTracker t(o, absl::Seconds(10), nullptr);
  t.Start();
  ASSERT_TRUE(t.current().has_value());
  EXPECT_TRUE(absl::StrContains(t.status_message(), "CAP_SYS_PTRACE")) << t.status_message();
  t.Stop();

  o.proc_root = "/proc";
  TargetTracker readable(o, absl::Seconds(10), nullptr);
  readable.Start();
  ASSERT_TRUE(readable.current().has_value());
  EXPECT_FALSE(absl::StrContains(readable.status_message(), "warning"))
      << readable.status_message();
  readable.Stop();
}

// Field 3 of /proc/PID/stat ('?' if unreadable).
char ProcState(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() ? '?' : text[close + 2];
}

// Starts `argv` (argv[0] is the path) as a child, exactly at pid `want` when possible: sets
// /proc/sys/kernel/ns_last_pid to want - 1 just before forking and retries while another process
// of the machine takes the pid first. Returns the child's pid (== want on success).
pid_t StartAtPid(pid_t want, const std::vector<std::string>& argv) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    {
      std::ofstream f("/proc/sys/kernel/ns_last_pid");
      f << (want - 1);
    }
    pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    if (pid == want) return pid;
    Kill(pid);
  }
  return -1;
}

// --target_pid names one process: when it exits and another process gets its pid, the tracker
// reports the target gone and never adopts the newcomer.
TEST(TargetTrackerTest, TargetPidIsNotAdoptedWhenThePidIsReused) {
  if (geteuid() != 0) GTEST_SKIP() << "writing /proc/sys/kernel/ns_last_pid needs root";
  std::string dir = testing::MakeTempDir("tracker");
  pid_t first = StartNamed(dir, "reuse-first");
  std::vector<pid_t> seen;
  std::mutex mu;
  DiscoveryOptions o;
  o.target_pid = first;
  TargetTracker t(o, absl::Milliseconds(50), [&](const std::optional<ProcessInfo>& p) {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back(p ? p->pid : 0);
  });
  t.Start();
  ASSERT_TRUE(t.current().has_value());
  Kill(first);
  testing::RunCommand(absl::StrCat("cp /bin/sleep '", dir, "/reuse-second'"));
  pid_t second = StartAtPid(first, {dir + "/reuse-second", "60"});
  ASSERT_EQ(second, first) << "could not get pid " << first << " again";
  for (int i = 0; i < 50; ++i) {  // until the newcomer runs its own program
    auto info = ReadProcessInfo(second);
    if (info.ok() && info->comm == "reuse-second") break;
    usleep(20 * 1000);
  }
  usleep(500 * 1000);  // ten checks
  EXPECT_FALSE(t.current().has_value())
      << "adopted pid " << t.current()->pid << " (" << t.current()->comm << ")";
  EXPECT_TRUE(absl::StrContains(t.status_message(), "another process")) << t.status_message();
  EXPECT_TRUE(absl::StrContains(t.status_message(), "does not follow restarts"))
      << t.status_message();
  t.Stop();
  Kill(second);
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(seen, (std::vector<pid_t>{first, 0}));
}

// A target that exec()s another program keeps its pid and start time: the tracker keeps it, and
// its name, executable and the change are reported (so /healthz names the new program).
std::string ReadComm(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/comm"));
  std::string comm;
  std::getline(f, comm);
  return comm;
}

TEST(TargetTrackerTest, NoticesExec) {
  std::string dir = testing::MakeTempDir("tracker");
  testing::RunCommand(
      absl::StrCat("cp /bin/sh '", dir, "/execer' && cp /bin/sleep '", dir, "/after-exec'"));
  pid_t pid = fork();
  if (pid == 0) {
    const std::string script = absl::StrCat("sleep 0.5; exec '", dir, "/after-exec' 60");
    execl((dir + "/execer").c_str(), "execer", "-c", script.c_str(), nullptr);
    _exit(127);
  }
  // The child is the execer once its first exec is done (on a loaded machine, not at once).
  for (int i = 0; i < 500 && ReadComm(pid) != "execer"; ++i) usleep(10 * 1000);
  ASSERT_EQ(ReadComm(pid), "execer");
  std::vector<std::string> seen;
  std::mutex mu;
  DiscoveryOptions o;
  o.target_pid = pid;
  TargetTracker t(o, absl::Milliseconds(50), [&](const std::optional<ProcessInfo>& p) {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back(p ? p->comm : "");
  });
  t.Start();
  ASSERT_TRUE(t.current().has_value());
  EXPECT_EQ(t.current()->comm, "execer");
  for (int i = 0; i < 500 && t.current() && t.current()->comm != "after-exec"; ++i) {
    usleep(20 * 1000);
  }
  ASSERT_TRUE(t.current().has_value());
  EXPECT_EQ(t.current()->pid, pid);
  EXPECT_EQ(t.current()->comm, "after-exec");
  EXPECT_TRUE(absl::EndsWith(t.current()->exe, "/after-exec")) << t.current()->exe;
  EXPECT_TRUE(absl::StrContains(t.status_message(), "exec'd")) << t.status_message();
  for (int i = 0; i < 100; ++i) {  // the callbacks run on the tracker's worker thread
    {
      std::lock_guard<std::mutex> l(mu);
      if (seen.size() >= 2) break;
    }
    usleep(20 * 1000);
  }
  t.Stop();
  Kill(pid);
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(seen, (std::vector<std::string>{"execer", "after-exec"}));
}

// What a change triggers (opening the target's binaries, attaching probes) may be slow or stuck
// on something the target controls; the checks go on: its exit still shows.
TEST(TargetTrackerTest, ExitIsNoticedWhileACallbackIsStuck) {
  std::string dir = testing::MakeTempDir("tracker");
  pid_t first = StartNamed(dir, "stuck-cb");
  std::atomic<bool> release{false};
  std::atomic<int> calls{0};
  DiscoveryOptions o;
  o.target_name = "stuck-cb";
  TargetTracker t(o, absl::Milliseconds(50),
                  [&](const std::optional<ProcessInfo>&) { calls.fetch_add(1); });
  t.SetOnRecheck([&](const std::optional<ProcessInfo>&) {
    while (!release.load()) usleep(10 * 1000);  // stuck, as on a FIFO
  });
  t.Start();
  ASSERT_TRUE(t.current().has_value());
  usleep(200 * 1000);  // a recheck is stuck by now
  Kill(first);
  for (int i = 0; i < 50 && t.current().has_value(); ++i) usleep(20 * 1000);
  EXPECT_FALSE(t.current().has_value()) << "the target's exit was not noticed";
  release.store(true);
  t.Stop();
}

// A target that exited but was not reaped yet (a zombie: empty maps, no exe) is gone; it is not
// reported as unreadable for want of CAP_SYS_PTRACE.
TEST(TargetTrackerTest, ExitedTargetIsNotBlamedOnCapabilities) {
  std::string dir = testing::MakeTempDir("tracker");
  pid_t pid = StartNamed(dir, "zombie-soon");
  DiscoveryOptions o;
  o.target_pid = pid;
  TargetTracker t(o, absl::Milliseconds(50), nullptr);
  t.Start();
  ASSERT_TRUE(t.current().has_value());
  kill(pid, SIGKILL);  // not reaped: stays a zombie
  for (int i = 0; i < 100 && ProcState(pid) != 'Z'; ++i) usleep(10 * 1000);
  ASSERT_EQ(ProcState(pid), 'Z');
  for (int i = 0; i < 50 && t.current().has_value(); ++i) usleep(20 * 1000);
  EXPECT_FALSE(t.current().has_value());
  EXPECT_TRUE(absl::StrContains(t.status_message(), "exited")) << t.status_message();
  EXPECT_FALSE(absl::StrContains(t.status_message(), "CAP_SYS_PTRACE")) << t.status_message();
  absl::Status st = CheckTargetReadable(pid);
  EXPECT_TRUE(absl::IsNotFound(st)) << st;
  t.Stop();

  // Started on the zombie: not a target either.
  TargetTracker late(o, absl::Milliseconds(50), nullptr);
  late.Start();
  EXPECT_FALSE(late.current().has_value());
  EXPECT_FALSE(absl::StrContains(late.status_message(), "CAP_SYS_PTRACE")) << late.status_message();
  late.Stop();
  Kill(pid);
}

}  // namespace
}  // namespace pprof_sidecar
