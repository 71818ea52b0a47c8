#include "agent/symbolize/elf_symbolizer.h"

#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildNative;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;

struct NmSym {
  uint64_t addr = 0;
  uint64_t size = 0;  // 0 if nm printed none
  std::string name;
};

// Function symbols as nm sees them: types T/t/i, and weak W/w ones (templates, inline members)
// when readelf says they are FUNC (weak symbols may also be data, e.g. data_start).
std::vector<NmSym> NmFunctions(const std::string& bin, bool dynamic) {
  std::set<std::string> weak_funcs;
  auto re = RunCommand(absl::StrCat("readelf -sW ", dynamic ? "--dyn-syms " : "", "'", bin, "'"));
  EXPECT_EQ(re.exit_code, 0) << re.output;
  for (absl::string_view line : absl::StrSplit(re.output, '\n')) {
    // "  Num: Value Size Type Bind Vis Ndx Name"
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() >= 8 && f[3] == "FUNC" && f[4] == "WEAK") weak_funcs.insert(std::string(f[7]));
  }
  auto r = RunCommand(absl::StrCat("nm -S --defined-only ", dynamic ? "-D " : "", "'", bin, "'"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<NmSym> out;
  for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    NmSym s;
    absl::string_view type;
    if (f.size() == 4) {
      if (!absl::SimpleHexAtoi(f[1], &s.size)) continue;
      type = f[2];
      s.name = std::string(f[3]);
    } else if (f.size() == 3) {
      type = f[1];
      s.name = std::string(f[2]);
    } else {
      continue;
    }
    bool weak = type == "W" || type == "w";
    if (type != "T" && type != "t" && type != "i" && !(weak && weak_funcs.count(s.name))) continue;
    if (!absl::SimpleHexAtoi(f[0], &s.addr) || s.addr == 0) continue;
    out.push_back(s);
  }
  return out;
}

std::string CxxFilt(const std::string& name) {
  auto r = RunCommand("c++filt '" + name + "'");
  EXPECT_EQ(r.exit_code, 0);
  return std::string(absl::StripAsciiWhitespace(r.output));
}

struct Case {
  friend void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
  std::string name;
  std::string src;
  std::string flags;
  bool stripped;
  // Demangled names that must be found (by nm address) and symbolized.
  std::vector<std::string> expect;
};

class ElfSymbolizerTest : public ::testing::TestWithParam<Case> {};

TEST_P(ElfSymbolizerTest, AddressesFromNmMapToTheirFunctions) {
  const Case& c = GetParam();
  std::string dir = MakeTempDir("elf_symbolizer_test");
  auto bin =
      BuildNative({TestDataDir() + "/targets/native_syms/" + c.src}, c.flags, dir + "/" + c.name);
  ASSERT_TRUE(bin.ok()) << bin.status();
  if (c.stripped) {
    auto r = RunCommand("readelf -SW '" + *bin + "'");
    ASSERT_EQ(r.output.find(".symtab"), std::string::npos) << "binary is not stripped";
  }
  auto elf = ElfFile::Open(*bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  ElfSymbolizer sym(**elf);
  (*elf).reset();  // the symbolizer must not depend on the ElfFile afterwards
  ASSERT_GT(sym.size(), 0u);

  std::vector<NmSym> nm = NmFunctions(*bin, c.stripped);
  ASSERT_FALSE(nm.empty());
  std::map<uint64_t, std::set<std::string>> names_at;
  for (const auto& s : nm) names_at[s.addr].insert(s.name);

  // Every function nm knows resolves, at its first and (if sized) last byte, to a symbol at
  // that address.
  for (const auto& s : nm) {
    SCOPED_TRACE(s.name);
    for (uint64_t pc : {s.addr, s.addr + (s.size ? s.size - 1 : 0)}) {
      auto got = sym.Lookup(pc);
      ASSERT_TRUE(got.has_value()) << std::hex << pc;
      EXPECT_TRUE(names_at[s.addr].count(got->system_name)) << got->system_name;
      EXPECT_TRUE(got->file.empty());
      EXPECT_EQ(got->line, 0);
    }
  }

  // The program's own functions come back demangled exactly as c++filt prints them.
  std::set<std::string> found;
  for (const auto& s : nm) {
    std::string demangled = CxxFilt(s.name);
    bool wanted = false;
    for (const auto& e : c.expect) wanted |= demangled == e;
    if (!wanted) continue;
    found.insert(demangled);
    auto got = sym.Lookup(s.addr + 1);
    ASSERT_TRUE(got.has_value()) << s.name;
    EXPECT_EQ(got->system_name, s.name);
    EXPECT_EQ(got->function, demangled);
  }
  EXPECT_EQ(found.size(), c.expect.size());

  // Addresses below all functions do not resolve.
  EXPECT_FALSE(sym.Lookup(0).has_value());
  EXPECT_FALSE(sym.Lookup(nm.front().addr > 0x100 ? 0x100 : 0).has_value());
}

const std::vector<std::string> kCFuncs = {"main", "c_leaf_work", "c_static_helper", "c_middle"};
const std::vector<std::string> kCxxFuncs = {
    "main",
    "sym_test::inner::SpinWork(long)",
    "long sym_test::inner::Accumulate<long>(std::vector<long, std::allocator<long> > const&)",
    "double sym_test::inner::Accumulate<double>(std::vector<double, std::allocator<double> > "
    "const&)",
    "sym_test::inner::Worker::Run(int) const",
};

INSTANTIATE_TEST_SUITE_P(
    Binaries, ElfSymbolizerTest,
    ::testing::Values(Case{"c_pie", "prog.c", "-O1 -fPIE -pie", false, kCFuncs},
                      Case{"c_nopie", "prog.c", "-O1 -fno-pie -no-pie", false, kCFuncs},
                      Case{"c_stripped",
                           "prog.c",
                           "-O1 -fPIE -pie -rdynamic -s",
                           true,
                           {"main", "c_leaf_work", "c_middle"}},
                      Case{"cc_pie", "prog.cc", "-O1 -fPIE -pie", false, kCxxFuncs},
                      Case{"cc_nopie", "prog.cc", "-O1 -fno-pie -no-pie", false, kCxxFuncs},
                      Case{"cc_stripped",
                           "prog.cc",
                           "-O1 -fPIE -pie -rdynamic -s",
                           true,
                           {"main", "sym_test::inner::SpinWork(long)",
                            "sym_test::inner::Worker::Run(int) const"}}),
    [](const auto& info) { return info.param.name; });

TEST(DemangleTest, MatchesCxxFilt) {
  for (const std::string m : {"_ZN8sym_test5inner8SpinWorkEl", "_ZNK8sym_test5inner6Worker3RunEi",
                              "_ZNSt6vectorIiSaIiEE9push_backERKi", "_Z1fv"}) {
    EXPECT_EQ(Demangle(m), CxxFilt(m)) << m;
    EXPECT_NE(Demangle(m), m);
  }
  // Not mangled, or invalid: unchanged.
  for (const std::string s : {"main", "c_leaf_work", "", "_Z", "_Zgarbage!!", "_ZN3fooE_bad"}) {
    EXPECT_EQ(Demangle(s), s);
  }
}

}  // namespace
}  // namespace pprof_sidecar
