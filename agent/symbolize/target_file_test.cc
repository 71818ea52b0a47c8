#include "agent/symbolize/target_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string ReadFd(const TargetFd& fd) {
  std::string out(static_cast<size_t>(fd.size()), '\0');
  ssize_t n = pread(fd.get(), out.data(), out.size(), 0);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

// Every test runs under an alarm: an open that blocks (a FIFO opened for reading waits for a
// writer) kills the test instead of hanging it.
class TargetFileTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    UseOpenat2ForTesting(GetParam());
    alarm(20);
    dir_ = MakeTempDir("target_file_test");
    root_ = dir_ + "/root";
    outside_ = dir_ + "/outside";
    ASSERT_EQ(RunCommand(absl::StrCat("mkdir -p '", root_, "/usr/lib/debug/a' '", root_, dir_,
                                      "/outside' '", outside_, "'"))
                  .exit_code,
              0);
    // The same absolute path exists outside the root (the agent's file) and inside it.
    WriteFile(outside_ + "/secret", "agent's file");
    WriteFile(root_ + dir_ + "/outside/secret", "target's file");
    WriteFile(root_ + "/usr/lib/debug/a/plain", "plain");
  }
  void TearDown() override {
    alarm(0);
    UseOpenat2ForTesting(true);
    RunCommand(absl::StrCat("rm -rf '", dir_, "'"));
  }
  std::string dir_, root_, outside_;
};

TEST_P(TargetFileTest, RegularFileInsideTheRoot) {
  auto f = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/plain");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(ReadFd(*f), "plain");
  EXPECT_EQ(f->size(), 5u);
  // The fd is readable without O_NONBLOCK surprises for regular files, and named by ProcPath.
  auto again = OpenRegularFile(f->ProcPath());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ino(), f->ino());
}

TEST_P(TargetFileTest, AbsoluteSymlinkResolvesInsideTheRoot) {
  const std::string link = root_ + "/usr/lib/debug/a/link";
  ASSERT_EQ(symlink((outside_ + "/secret").c_str(), link.c_str()), 0);
  auto f = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/link");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(ReadFd(*f), "target's file");
  // Where the root has no such file, the open fails instead of reaching the agent's.
  RunCommand(absl::StrCat("rm -f '", root_, dir_, "/outside/secret'"));
  auto g = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/link");
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(absl::IsNotFound(g.status())) << g.status();
}

TEST_P(TargetFileTest, DotDotStopsAtTheRoot) {
  const std::string link = root_ + "/usr/lib/debug/a/up";
  ASSERT_EQ(symlink(absl::StrCat("../../../../../../../../..", dir_, "/outside/secret").c_str(),
                    link.c_str()),
            0);
  auto f = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/up");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(ReadFd(*f), "target's file");
  auto g = OpenRegularFileInRoot(root_, absl::StrCat("/../../../..", dir_, "/outside/secret"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(ReadFd(*g), "target's file");
}

TEST_P(TargetFileTest, RelativeSymlinkChainInsideTheRoot) {
  // Fedora's .build-id layout: a relative link to the real debug file.
  ASSERT_EQ(symlink("../debug/a/plain", (root_ + "/usr/lib/debug/rel").c_str()), 0);
  ASSERT_EQ(symlink("/usr/lib/debug/rel", (root_ + "/usr/lib/debug/abs").c_str()), 0);
  auto f = OpenRegularFileInRoot(root_, "/usr/lib/debug/abs");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(ReadFd(*f), "plain");
}

TEST_P(TargetFileTest, FifoIsRefusedWithoutBlocking) {
  const std::string fifo = root_ + "/usr/lib/debug/a/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  const absl::Time start = absl::Now();
  auto f = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/fifo");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition) << f.status();
  EXPECT_TRUE(absl::StrContains(f.status().message(), "FIFO")) << f.status();
  auto g = OpenRegularFile(fifo);
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(absl::StrContains(g.status().message(), "FIFO")) << g.status();
  // Also behind a symlink.
  ASSERT_EQ(symlink("fifo", (root_ + "/usr/lib/debug/a/tofifo").c_str()), 0);
  auto h = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/tofifo");
  ASSERT_FALSE(h.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

TEST_P(TargetFileTest, DirectoryAndDeviceAreRefused) {
  auto d = OpenRegularFileInRoot(root_, "/usr/lib/debug");
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(absl::StrContains(d.status().message(), "directory")) << d.status();
  auto n = OpenRegularFile("/dev/null");
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(absl::StrContains(n.status().message(), "character device")) << n.status();
}

TEST_P(TargetFileTest, HugeFileIsRefusedBeforeReading) {
  const std::string huge = root_ + "/usr/lib/debug/a/huge";
  // Sparse: no disk space, but larger than any debug file the agent reads.
  int fd = open(huge.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kMaxTargetFileBytes + 1)), 0);
  close(fd);
  auto f = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/huge");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition) << f.status();
  EXPECT_TRUE(absl::StrContains(f.status().message(), "larger than the limit")) << f.status();
  auto small = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/plain", 4);
  EXPECT_FALSE(small.ok());
}

TEST_P(TargetFileTest, SymlinkLoopFails) {
  ASSERT_EQ(symlink("loop2", (root_ + "/usr/lib/debug/a/loop1").c_str()), 0);
  ASSERT_EQ(symlink("loop1", (root_ + "/usr/lib/debug/a/loop2").c_str()), 0);
  auto f = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/loop1");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::StrContains(f.status().message(), "symbolic links")) << f.status();
}

TEST_P(TargetFileTest, MissingRootOrFile) {
  auto f = OpenRegularFileInRoot(dir_ + "/nope", "/x");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::IsNotFound(f.status())) << f.status();
  auto g = OpenRegularFileInRoot(root_, "/usr/lib/debug/a/plain/x");
  ASSERT_FALSE(g.ok());
}

INSTANTIATE_TEST_SUITE_P(Resolution, TargetFileTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "openat2" : "walk";
                         });

}  // namespace
}  // namespace pprof_sidecar
