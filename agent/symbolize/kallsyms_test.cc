#include "agent/symbolize/kallsyms.h"

#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::RunCommand;

TEST(KallsymsTest, LoadAndLookUpRealKernelSymbols) {
  if (geteuid() != 0) GTEST_SKIP() << "kallsyms addresses need root";
  auto k = Kallsyms::Load();
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_GT((*k)->size(), 1000u);
  // Real addresses of well-known text symbols, read independently with grep.
  for (const char* name : {"schedule", "do_sys_open", "vfs_read"}) {
    auto r = RunCommand(std::string("grep -m1 -E '^[0-9a-f]+ [tT] ") + name + "$' /proc/kallsyms");
    if (r.exit_code != 0) continue;  // not in this kernel
    uint64_t addr = 0;
    ASSERT_TRUE(absl::SimpleHexAtoi(r.output.substr(0, r.output.find(' ')), &addr)) << r.output;
    auto s = (*k)->Lookup(addr + 1);
    ASSERT_TRUE(s.has_value()) << name;
    EXPECT_EQ(s->addr, addr);
    EXPECT_EQ(s->name, name);
    EXPECT_EQ(s->module, "");
  }
  // A symbol from a loaded module, if any, carries its module name.
  auto r = RunCommand("grep -m1 -E '^[0-9a-f]+ [tT] [^ ]+\t\\[[^]]+\\]$' /proc/kallsyms");
  if (r.exit_code == 0) {
    std::vector<std::string> f =
        absl::StrSplit(r.output, absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
    ASSERT_EQ(f.size(), 4u) << r.output;
    uint64_t addr = 0;
    ASSERT_TRUE(absl::SimpleHexAtoi(f[0], &addr));
    auto s = (*k)->Lookup(addr);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->addr, addr);
    EXPECT_EQ("[" + s->module + "]", f[3]);
  }
}

TEST(KallsymsTest, ZeroedAddressesAreAnError) {
  // What an unprivileged reader sees: the real file with every address zeroed.
  auto r = RunCommand("head -n 5000 /proc/kallsyms | sed -E 's/^[0-9a-f]+/0000000000000000/'");
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_FALSE(r.output.empty());
  auto k = Kallsyms::Parse(r.output);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(Kallsyms::Parse("").ok());
  EXPECT_FALSE(Kallsyms::Load("/nonexistent/kallsyms").ok());
}

TEST(KallsymsTest, ParseKeepsOnlyTextSymbols) {
  auto k = Kallsyms::Parse(
      "ffffffff81000000 T _stext\n"
      "ffffffff81000000 T startup_64\n"
      "ffffffff81000100 t helper\n"
      "ffffffff81000200 D some_data\n"
      "ffffffff81000300 W weak_fn\n"
      "garbage line\n"
      "ffffffffc0001000 t mod_fn\t[mymod]\n");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ((*k)->size(), 5u);
  EXPECT_FALSE((*k)->Lookup(0xffffffff80ffffff).has_value());
  EXPECT_EQ((*k)->Lookup(0xffffffff81000000)->name, "_stext");
  EXPECT_EQ((*k)->Lookup(0xffffffff81000250)->name, "helper");  // data symbol skipped
  EXPECT_EQ((*k)->Lookup(0xffffffff81000300)->name, "weak_fn");
  auto m = (*k)->Lookup(0xffffffffc0001010);
  EXPECT_EQ(m->name, "mod_fn");
  EXPECT_EQ(m->module, "mymod");
}

}  // namespace
}  // namespace pprof_sidecar
