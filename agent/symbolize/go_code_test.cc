#include "agent/symbolize/go_code.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/symbolize/elf_file.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using testing::BuildGo;
using testing::GoVersionName;
using testing::GoVersions;
using testing::MakeTempDir;
using testing::TestDataDir;

std::string Call(int32_t rel) {
  std::string s(1, '\xE8');
  s.append(reinterpret_cast<const char*>(&rel), 4);
  return s;
}

TEST(FindDirectCallReturnsTest, FindsCallsToTheTargetOnly) {
  // 0x1000: nop; call 0x1100 (ret 0x1006); call 0x1200 (ret 0x100b); call 0x1100 (ret 0x1010).
  std::string code = "\x90" + Call(0x1100 - 0x1006) + Call(0x1200 - 0x100b) + Call(0x1100 - 0x1010);
  EXPECT_EQ(FindDirectCallReturns(code, 0x1000, 0x1100), (std::vector<uint64_t>{0x1006, 0x1010}));
  EXPECT_EQ(FindDirectCallReturns(code, 0x1000, 0x1200), (std::vector<uint64_t>{0x100b}));
  EXPECT_TRUE(FindDirectCallReturns(code, 0x1000, 0x1300).empty());
  EXPECT_TRUE(FindDirectCallReturns(code.substr(0, 5), 0x1000, 0x1100).empty());  // truncated
  // Backward calls (negative displacement).
  EXPECT_EQ(FindDirectCallReturns(Call(-0x20), 0x1000, 0x1005 - 0x20),
            (std::vector<uint64_t>{0x1005}));
}

class GoCgoCallTest : public ::testing::TestWithParam<std::string> {};

// On real cgo binaries (stripped too): the return address found is right after a direct call to
// runtime.asmcgocall inside runtime.cgocall, as the pclntab and the code bytes agree.
TEST_P(GoCgoCallTest, FindsCgocallsReturnFromAsmcgocall) {
  const std::string dir = MakeTempDir("go_code");
  for (const std::string& flags : {std::string(), std::string("-ldflags='-s -w'")}) {
    SCOPED_TRACE(flags);
    auto bin = BuildGo(GetParam(), TestDataDir() + "/targets/unwind_cgo", flags,
                       absl::StrCat(dir, "/cgo", flags.empty() ? "" : "_stripped"));
    ASSERT_TRUE(bin.ok()) << bin.status();
    auto elf = ElfFile::Open(*bin);
    ASSERT_TRUE(elf.ok()) << elf.status();
    auto pcln = GoPclntab::FromElf(**elf);
    ASSERT_TRUE(pcln.ok()) << pcln.status();
    auto cgo = FindGoCgoCall(**elf, **pcln);
    ASSERT_TRUE(cgo.ok()) << cgo.status();
    auto caller = (*pcln)->LookupFunc(cgo->asmcgocall_return - 1);
    ASSERT_TRUE(caller.ok()) << caller.status();
    EXPECT_EQ(caller->name, "runtime.cgocall");
    EXPECT_EQ(caller->entry, cgo->cgocall_entry);
    auto funcs = FindGoFuncs(**pcln, {"runtime.asmcgocall"});
    ASSERT_EQ(funcs.count("runtime.asmcgocall"), 1u);
    EXPECT_TRUE(
        IsDirectCallReturn(**elf, cgo->asmcgocall_return, funcs["runtime.asmcgocall"].entry));
    EXPECT_FALSE(
        IsDirectCallReturn(**elf, cgo->asmcgocall_return + 1, funcs["runtime.asmcgocall"].entry));
    // The BPF sampler reads g at fs_base - 8: the executable's TLS block must hold nothing but
    // runtime.tlsg (8 bytes), also when linked externally with C code as here.
    auto tls = testing::RunCommand("readelf -lW '" + *bin + "' | grep -w TLS");
    EXPECT_EQ(tls.exit_code, 0) << tls.output;
    std::vector<std::string> f = absl::StrSplit(tls.output, ' ', absl::SkipEmpty());
    ASSERT_GE(f.size(), 6u) << tls.output;
    EXPECT_EQ(f[5], "0x000008") << "PT_TLS memsz: " << tls.output;
  }
}

INSTANTIATE_TEST_SUITE_P(GoVersions, GoCgoCallTest, ::testing::ValuesIn(GoVersions()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return GoVersionName(i.param);
                         });

}  // namespace
}  // namespace pprof_sidecar
