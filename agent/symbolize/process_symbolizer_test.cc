// ProcessSymbolizer against real processes whose filesystem the test controls: a target in a
// chroot, with its debug info in a separate file under the chroot's /usr/lib/debug/.build-id.
// The target is hostile: its debug path may be a FIFO, a symlink out of its root or a huge file.
// Needs root (chroot).
#include "agent/symbolize/process_symbolizer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "agent/symbolize/elf_file.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildNative;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;

constexpr char kTargetSource[] = R"(
__attribute__((noinline)) void hostile_marker(volatile unsigned long* x) {
  for (;;) *x += 1;
}
int main(void) {
  volatile unsigned long x = 0;
  hostile_marker(&x);
  return 0;
}
)";

struct Built {
  std::string dir, bin, debug, build_id;
  uint64_t marker = 0;  // runtime address of hostile_marker (static, not PIE)
};

// A static executable without its DWARF, and the DWARF in a separate file.
Built BuildTarget() {
  Built b;
  b.dir = MakeTempDir("process_symbolizer_test");
  const std::string src = b.dir + "/target.c";
  std::ofstream(src) << kTargetSource;
  auto bin = BuildNative({src}, "-static -no-pie -O1 -g -Wl,--build-id", b.dir + "/target");
  EXPECT_TRUE(bin.ok()) << bin.status();
  b.bin = b.dir + "/target";
  b.debug = b.dir + "/target.debug";
  auto r = RunCommand(absl::StrCat("objcopy --only-keep-debug '", b.bin, "' '", b.debug,
                                   "' && objcopy --strip-debug '", b.bin, "'"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto elf = ElfFile::Open(b.bin);
  EXPECT_TRUE(elf.ok()) << elf.status();
  if (elf.ok()) {
    b.build_id = (*elf)->BuildId();
    auto sym = (*elf)->FindSymbol("hostile_marker");
    EXPECT_TRUE(sym.has_value());
    if (sym) b.marker = sym->value;
  }
  return b;
}

// Runs `bin` as /target inside a fresh root `root`; kills it on destruction.
class ChrootedTarget {
 public:
  ChrootedTarget(const std::string& root, const std::string& bin) {
    RunCommand(absl::StrCat("cp '", bin, "' '", root, "/target'"));
    pid_ = fork();
    if (pid_ == 0) {
      if (chroot(root.c_str()) != 0 || chdir("/") != 0) _exit(126);
      execl("/target", "target", nullptr);
      _exit(127);
    }
    // Until exec completed.
    for (int i = 0; i < 200; ++i) {
      char buf[256];
      ssize_t n = readlink(absl::StrCat("/proc/", pid_, "/exe").c_str(), buf, sizeof(buf) - 1);
      if (n > 0 && absl::EndsWith(absl::string_view(buf, n), "/target")) break;
      usleep(10 * 1000);
    }
  }
  ~ChrootedTarget() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

class HostileDebugFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "chroot needs root";
    // A lookup that blocks (a FIFO opened for reading waits for a writer forever) fails the
    // test by SIGALRM instead of hanging it.
    alarm(120);
    b_ = BuildTarget();
    ASSERT_FALSE(b_.build_id.empty());
    ASSERT_NE(b_.marker, 0u);
    root_ = b_.dir + "/root";
    debug_dir_ = absl::StrCat(root_, "/usr/lib/debug/.build-id/", b_.build_id.substr(0, 2));
    debug_path_ = absl::StrCat(debug_dir_, "/", b_.build_id.substr(2), ".debug");
    ASSERT_EQ(RunCommand(absl::StrCat("mkdir -p '", debug_dir_, "'")).exit_code, 0);
  }
  void TearDown() override {
    alarm(0);
    if (!HasFailure() && !b_.dir.empty()) RunCommand(absl::StrCat("rm -rf '", b_.dir, "'"));
  }

  // Symbolizes hostile_marker in a chrooted target; fails the test if that takes over 5 s.
  ResolvedFrame ResolveMarker() {
    ChrootedTarget t(root_, b_.bin);
    ProcessSymbolizer sym;
    const absl::Time start = absl::Now();
    auto f = std::async(std::launch::async, [&] {
      auto s = sym.NewSession(t.pid());
      return s->ResolveUser(b_.marker, false);
    });
    if (f.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
      ADD_FAILURE() << "symbolizing the target blocked";
      // The lookup thread cannot be cancelled: end the test process (and the target) now.
      kill(t.pid(), SIGKILL);
      fflush(stdout);
      _exit(1);
    }
    ResolvedFrame r = f.get();
    printf("resolved in %s\n", absl::FormatDuration(absl::Now() - start).c_str());
    return r;
  }

  static bool HasFileLine(const ResolvedFrame& f) {
    return !f.lines.empty() && absl::EndsWith(f.lines.back().file, "target.c") &&
           f.lines.back().line > 0;
  }

  Built b_;
  std::string root_, debug_dir_, debug_path_;
};

TEST_F(HostileDebugFileTest, DebugFileInsideTheRootIsUsed) {
  ASSERT_EQ(RunCommand(absl::StrCat("cp '", b_.debug, "' '", debug_path_, "'")).exit_code, 0);
  ResolvedFrame f = ResolveMarker();
  ASSERT_FALSE(f.lines.empty());
  EXPECT_EQ(f.lines.back().function, "hostile_marker");
  EXPECT_TRUE(HasFileLine(f)) << f.lines.back().file << ":" << f.lines.back().line;
}

TEST_F(HostileDebugFileTest, AbsoluteSymlinkInsideTheRootIsFollowedThere) {
  // As distributions lay out .build-id: a link to the debug file elsewhere in the same root.
  ASSERT_EQ(RunCommand(absl::StrCat("mkdir -p '", root_, "/usr/lib/debug/usr/bin' && cp '",
                                    b_.debug, "' '", root_, "/usr/lib/debug/usr/bin/target.debug'"))
                .exit_code,
            0);
  ASSERT_EQ(symlink("/usr/lib/debug/usr/bin/target.debug", debug_path_.c_str()), 0);
  ResolvedFrame f = ResolveMarker();
  EXPECT_TRUE(HasFileLine(f));
}

TEST_F(HostileDebugFileTest, SymlinkOutOfTheRootIsNotFollowed) {
  // The link names the agent's copy of the debug file, outside the target's root.
  ASSERT_EQ(symlink(b_.debug.c_str(), debug_path_.c_str()), 0);
  ResolvedFrame f = ResolveMarker();
  ASSERT_FALSE(f.lines.empty());
  EXPECT_EQ(f.lines.back().function, "hostile_marker");  // from the binary's own symbols
  EXPECT_FALSE(HasFileLine(f)) << "the debug file outside the target's root was read: "
                               << f.lines.back().file << ":" << f.lines.back().line;
}

TEST_F(HostileDebugFileTest, FifoDoesNotBlock) {
  ASSERT_EQ(mkfifo(debug_path_.c_str(), 0644), 0);
  ResolvedFrame f = ResolveMarker();
  ASSERT_FALSE(f.lines.empty());
  EXPECT_EQ(f.lines.back().function, "hostile_marker");
  EXPECT_FALSE(HasFileLine(f));
}

TEST_F(HostileDebugFileTest, HugeFileIsNotRead) {
  // The real debug file, padded (sparse) past the size limit: valid, but not read.
  ASSERT_EQ(RunCommand(absl::StrCat("cp '", b_.debug, "' '", debug_path_, "' && truncate -s ",
                                    kMaxTargetFileBytes + 4096, " '", debug_path_, "'"))
                .exit_code,
            0);
  ResolvedFrame f = ResolveMarker();
  ASSERT_FALSE(f.lines.empty());
  EXPECT_EQ(f.lines.back().function, "hostile_marker");
  EXPECT_FALSE(HasFileLine(f));
}

}  // namespace
}  // namespace pprof_sidecar
