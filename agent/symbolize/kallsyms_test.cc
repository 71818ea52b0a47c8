#include "agent/symbolize/kallsyms.h"

#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
  // A symbol from a loaded module, if any, carries its module name. Not a BPF program's ([bpf]):
  // those come and go with whatever else loads programs meanwhile.
  auto r = RunCommand(
      "grep -E '^[0-9a-f]+ [tT] [^ ]+\t\\[[^]]+\\]$' /proc/kallsyms | grep -m1 -v '\\[bpf\\]$'");
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

// Every text symbol of the running kernel, looked up at its address and one byte past it, is
// what a plain reading of the file says: the first listed of the symbols at the greatest
// address <= the lookup, with its module. And the tables take well under the names' size.
TEST(KallsymsTest, EveryRealSymbolAsTheFileSaysItCompactly) {
  if (geteuid() != 0) GTEST_SKIP() << "kallsyms addresses need root";
  auto r = RunCommand("cat /proc/kallsyms");
  ASSERT_EQ(r.exit_code, 0);
  struct Ref {
    uint64_t addr;
    std::string name, module;
  };
  std::vector<Ref> ref;
  size_t name_bytes = 0;
  for (absl::string_view line : absl::StrSplit(r.output, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 3 || (f[1] != "t" && f[1] != "T" && f[1] != "w" && f[1] != "W")) continue;
    Ref e;
    if (!absl::SimpleHexAtoi(f[0], &e.addr) || e.addr == 0) continue;
    e.name = f[2];
    if (f.size() > 3) e.module = f[3].substr(1, f[3].size() - 2);
    name_bytes += e.name.size();
    ref.push_back(e);
  }
  ASSERT_GT(ref.size(), 1000u);
  std::stable_sort(ref.begin(), ref.end(),
                   [](const Ref& a, const Ref& b) { return a.addr < b.addr; });
  auto k = Kallsyms::Parse(r.output);
  ASSERT_TRUE(k.ok()) << k.status();
  ASSERT_EQ((*k)->size(), ref.size());
  size_t first = 0;  // first listed symbol at ref[i].addr
  for (size_t i = 0; i < ref.size(); ++i) {
    if (ref[i].addr != ref[first].addr) first = i;
    for (uint64_t a : {ref[i].addr, ref[i].addr + 1}) {
      if (a == ref[i].addr + 1 && i + 1 < ref.size() && ref[i + 1].addr == a) continue;
      auto s = (*k)->Lookup(a);
      ASSERT_TRUE(s.has_value()) << ref[i].name;
      ASSERT_EQ(s->addr, ref[i].addr) << ref[i].name;
      ASSERT_EQ(s->name, ref[first].name) << std::hex << a;
      ASSERT_EQ(s->module, ref[first].module) << ref[first].name;
    }
  }
  EXPECT_LT((*k)->MemoryBytes(), name_bytes / 2) << "names: " << name_bytes << " bytes";
}

// Addresses more than 4 GiB apart (they are stored as offsets from a base) and blocks of names
// ending mid-table.
TEST(KallsymsTest, FarApartAddresses) {
  std::string text;
  std::vector<uint64_t> addrs;
  for (int i = 0; i < 200; ++i) {
    uint64_t a = 0x1000 + static_cast<uint64_t>(i) * 0x100 + (i >= 100 ? uint64_t{5} << 32 : 0) +
                 (i >= 150 ? uint64_t{0xffffff} << 40 : 0);
    addrs.push_back(a);
    text +=
        absl::StrCat(absl::Hex(a, absl::kZeroPad16), " t fn_", i, i % 7 == 0 ? "\t[m]" : "", "\n");
  }
  auto k = Kallsyms::Parse(text);
  ASSERT_TRUE(k.ok()) << k.status();
  ASSERT_EQ((*k)->size(), 200u);
  for (int i = 0; i < 200; ++i) {
    auto s = (*k)->Lookup(addrs[i] + 0x80);
    ASSERT_TRUE(s.has_value()) << i;
    EXPECT_EQ(s->addr, addrs[i]);
    EXPECT_EQ(s->name, absl::StrCat("fn_", i));
    EXPECT_EQ(s->module, i % 7 == 0 ? "m" : "");
  }
  EXPECT_FALSE((*k)->Lookup(0xfff).has_value());
}

}  // namespace
}  // namespace pprof_sidecar
