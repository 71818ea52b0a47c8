#include "agent/target/target_discovery.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

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
  usleep(100 * 1000);  // let exec complete so /proc shows the new image
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
  t.Stop();
  Kill(second);
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(seen, (std::vector<pid_t>{first, 0, second}));
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

}  // namespace
}  // namespace pprof_sidecar
