#include "agent/symbolize/proc_maps.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/symbolize/elf_file.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;

TEST(ParseProcMapsTest, ParsesKernelFormats) {
  const char* text =
      "55d1c6a00000-55d1c6a21000 r-xp 00001000 fd:01 1311234                    /usr/bin/my prog\n"
      "55d1c7e4b000-55d1c7e6c000 rw-p 00000000 00:00 0                          [heap]\n"
      "7f2a1c000000-7f2a1c021000 rw-s 00000000 00:01 42                         /dev/zero "
      "(deleted)\n"
      "7f2a1d000000-7f2a1d001000 ---p 00000000 00:00 0 \n"
      "7f2a1e000000-7f2a1e001000 r--p 0000a000 103:1f 77 /tmp/a  b (deleted)\n"
      "7ffd3b5fe000-7ffd3b600000 r-xp 00000000 00:00 0                          [vdso]\n"
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";
  auto m = ParseProcMaps(text);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 7u);
  const MapEntry& e = (*m)[0];
  EXPECT_EQ(e.start, 0x55d1c6a00000u);
  EXPECT_EQ(e.end, 0x55d1c6a21000u);
  EXPECT_EQ(e.offset, 0x1000u);
  EXPECT_TRUE(e.read && e.exec && !e.write && !e.shared);
  EXPECT_EQ(e.dev_major, 0xfdu);
  EXPECT_EQ(e.dev_minor, 1u);
  EXPECT_EQ(e.inode, 1311234u);
  EXPECT_EQ(e.path, "/usr/bin/my prog");
  EXPECT_FALSE(e.deleted);
  EXPECT_TRUE(e.IsFileBacked());

  EXPECT_EQ((*m)[1].path, "[heap]");
  EXPECT_FALSE((*m)[1].IsFileBacked());
  EXPECT_TRUE((*m)[1].write);
  EXPECT_EQ((*m)[2].path, "/dev/zero");
  EXPECT_TRUE((*m)[2].deleted);
  EXPECT_TRUE((*m)[2].shared);
  EXPECT_EQ((*m)[3].path, "");
  EXPECT_FALSE((*m)[3].read);
  EXPECT_EQ((*m)[4].path, "/tmp/a  b");
  EXPECT_TRUE((*m)[4].deleted);
  EXPECT_EQ((*m)[4].dev_major, 0x103u);
  EXPECT_EQ((*m)[4].dev_minor, 0x1fu);
  EXPECT_EQ((*m)[4].offset, 0xa000u);
  EXPECT_EQ((*m)[5].path, "[vdso]");
  EXPECT_EQ((*m)[6].start, 0xffffffffff600000u);
  EXPECT_TRUE(ParseProcMaps("")->empty());
}

TEST(ParseProcMapsTest, MalformedLinesNameTheLine) {
  for (const char* bad : {
           "zz-10 r-xp 0 00:00 0\n",
           "10 r-xp 0 00:00 0\n",
           "20-10 r-xp 0 00:00 0\n",
           "10-20 r-x 0 00:00 0\n",
           "10-20 r-xp 0 0000 0\n",
           "10-20 r-xp 0 00:00\n",
           "10-20 r-xp 0 00:00 12a /x\n",
           "10000000000000000-20 r-xp 0 00:00 0\n",
       }) {
    std::string text = absl::StrCat("10-20 r-xp 0 00:00 0 /ok\n", bad);
    auto m = ParseProcMaps(text);
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(m.status().message(), "line 2")) << m.status();
  }
}

std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : "";
}

TEST(ReadProcMapsTest, FindsOwnExecutableAndLibc) {
  auto m = ReadProcMaps(getpid());
  ASSERT_TRUE(m.ok()) << m.status();
  // A snapshot of the real file parses into one entry per line (the live file changes between
  // reads, so compare against a single snapshot).
  std::ifstream in("/proc/self/maps");
  std::string snapshot((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto parsed = ParseProcMaps(snapshot);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->size(),
            static_cast<size_t>(std::count(snapshot.begin(), snapshot.end(), '\n')));
  EXPECT_GT(m->size(), 5u);

  std::string exe = RealPath("/proc/self/exe");
  ASSERT_FALSE(exe.empty());
  const MapEntry* text = nullptr;
  bool libc = false;
  for (const auto& e : *m) {
    if (e.path == exe && e.exec) text = &e;
    if (e.exec && absl::StrContains(e.path, "/libc.so")) libc = true;
  }
  ASSERT_NE(text, nullptr) << "no executable mapping of " << exe;
  EXPECT_TRUE(text->IsFileBacked());
  EXPECT_TRUE(libc);
  // This function's address lies in the executable's text mapping, and that mapping's file
  // offset maps to an executable PT_LOAD segment of the binary.
  uint64_t pc = reinterpret_cast<uint64_t>(&RealPath);
  EXPECT_TRUE(pc >= text->start && pc < text->end);
  auto file = OpenTargetFile(getpid(), *text);
  ASSERT_TRUE(file.ok()) << file.status();
  auto elf = ElfFile::Open(file->fd, file->path);
  ASSERT_TRUE(elf.ok()) << elf.status();
  auto vaddr = (*elf)->FileOffsetToVaddr(text->offset + (pc - text->start));
  ASSERT_TRUE(vaddr.has_value());
  auto self = ElfFile::Open(exe);
  ASSERT_TRUE(self.ok());
  EXPECT_EQ((*elf)->BuildId(), (*self)->BuildId());
}

TEST(ReadProcMapsTest, NoSuchProcess) {
  auto m = ReadProcMaps(-5);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(absl::StrContains(m.status().message(), "/proc/-5/maps")) << m.status();
}

TEST(OpenTargetFileTest, DeletedFileStillOpensThroughMapFiles) {
  if (geteuid() != 0) GTEST_SKIP() << "map_files needs CAP_SYS_ADMIN";
  // Map a copy of our own executable, then delete it.
  std::string path = MakeTempDir("proc_maps_test") + "/copy of exe";
  std::string exe = RealPath("/proc/self/exe");
  ASSERT_EQ(RunCommand("cp '" + exe + "' '" + path + "'").exit_code, 0);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  off_t len = lseek(fd, 0, SEEK_END);
  void* addr = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
  ASSERT_NE(addr, MAP_FAILED);
  close(fd);
  ASSERT_EQ(unlink(path.c_str()), 0);

  auto m = ReadProcMaps(getpid());
  ASSERT_TRUE(m.ok()) << m.status();
  const MapEntry* e = nullptr;
  for (const auto& x : *m) {
    if (x.start == reinterpret_cast<uint64_t>(addr)) e = &x;
  }
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->deleted);
  EXPECT_EQ(e->path, path);
  auto target = OpenTargetFile(getpid(), *e);
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->path, absl::StrFormat("/proc/%d/map_files/%x-%x", getpid(), e->start, e->end));
  auto elf = ElfFile::Open(target->fd, target->path);
  ASSERT_TRUE(elf.ok()) << elf.status();
  auto self = ElfFile::Open(exe);
  ASSERT_TRUE(self.ok()) << self.status();
  EXPECT_FALSE((*self)->BuildId().empty());
  EXPECT_EQ((*elf)->BuildId(), (*self)->BuildId());
  munmap(addr, len);
}

TEST(OpenTargetFileTest, FallsBackToRootPath) {
  MapEntry e;
  e.start = 0x1000;  // nothing is mapped at page 1
  e.end = 0x2000;
  e.inode = 1;
  e.path = "/etc/hostname";
  auto f = OpenTargetFile(getpid(), e);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->path, absl::StrCat("/proc/", getpid(), "/root/etc/hostname"));
  struct stat st;
  ASSERT_EQ(stat("/etc/hostname", &st), 0);
  EXPECT_EQ(f->fd.ino(), st.st_ino);
  // The fallback resolves inside the target's root and never opens a FIFO.
  const std::string dir = MakeTempDir("proc_maps_test");
  ASSERT_EQ(mkfifo((dir + "/fifo").c_str(), 0644), 0);
  e.path = dir + "/fifo";
  alarm(10);
  auto fifo = OpenTargetFile(getpid(), e);
  alarm(0);
  ASSERT_FALSE(fifo.ok());
  EXPECT_TRUE(absl::StrContains(fifo.status().message(), "FIFO")) << fifo.status();
}

}  // namespace
}  // namespace pprof_sidecar
