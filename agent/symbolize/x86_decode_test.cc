// The x86-64 length decoder against hand-checked encodings and against objdump on every
// instruction of real Go binaries (oldest and newest Go, plain and stripped PIE).
#include "agent/symbolize/x86_decode.h"

#include <map>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_code.h"
#include "agent/symbolize/go_pclntab.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::GoVersionName;
using ::pprof_sidecar::testing::kGoStrippedPie;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::OldestAndNewestGo;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;

X86Insn Decode(const std::string& bytes) {
  auto i = DecodeX86(bytes, 0);
  EXPECT_TRUE(i.has_value());
  return i.value_or(X86Insn());
}

TEST(DecodeX86Test, LengthsAndMemoryOperands) {
  // mov 0x10(%rip),%rcx
  X86Insn a = Decode(std::string("\x48\x8b\x0d\x10\x00\x00\x00", 7));
  EXPECT_EQ(a.length, 7u);
  EXPECT_TRUE(a.rip_relative);
  EXPECT_EQ(a.disp, 0x10);
  EXPECT_EQ(a.mem_bytes, 8);
  // cmpl $0x0,-0x20(%rip): 83 3d disp32 imm8
  X86Insn b = Decode(std::string("\x83\x3d\xe0\xff\xff\xff\x00", 7));
  EXPECT_EQ(b.length, 7u);
  EXPECT_EQ(b.disp, -0x20);
  EXPECT_EQ(b.mem_bytes, 4);
  // movq $0x0,0x8(%rip): 48 c7 05 disp32 imm32
  X86Insn c = Decode(std::string("\x48\xc7\x05\x08\x00\x00\x00\x00\x00\x00\x00", 11));
  EXPECT_EQ(c.length, 11u);
  EXPECT_EQ(c.mem_bytes, 8);
  // lock cmpxchg %ecx,0x4(%rip): f0 0f b1 0d disp32
  X86Insn d = Decode(std::string("\xf0\x0f\xb1\x0d\x04\x00\x00\x00", 8));
  EXPECT_EQ(d.length, 8u);
  EXPECT_EQ(d.mem_bytes, 4);
  // lea 0x4(%rip),%rax
  X86Insn e = Decode(std::string("\x48\x8d\x05\x04\x00\x00\x00", 7));
  EXPECT_TRUE(e.is_lea);
  EXPECT_EQ(e.mem_bytes, 0);
  // movzbl 0x1(%rip),%eax: 0f b6 05 disp32
  EXPECT_EQ(Decode(std::string("\x0f\xb6\x05\x01\x00\x00\x00", 7)).mem_bytes, 1);
  // testb $0x1,0x2(%rip): f6 05 disp32 imm8
  X86Insn f = Decode(std::string("\xf6\x05\x02\x00\x00\x00\x01", 7));
  EXPECT_EQ(f.length, 7u);
  EXPECT_EQ(f.mem_bytes, 1);
  // mov %fs:0xfffffffffffffff8,%r14: 64 4c 8b 34 25 f8 ff ff ff (SIB, no base)
  X86Insn g = Decode(std::string("\x64\x4c\x8b\x34\x25\xf8\xff\xff\xff", 9));
  EXPECT_EQ(g.length, 9u);
  EXPECT_FALSE(g.rip_relative);
  // movabs $imm64,%rax; jne rel32; vmovdqu (%rsi),%ymm0 (VEX 3-byte); vzeroupper
  EXPECT_EQ(Decode(std::string("\x48\xb8\x01\x02\x03\x04\x05\x06\x07\x08", 10)).length, 10u);
  EXPECT_EQ(Decode(std::string("\x0f\x85\x10\x00\x00\x00", 6)).length, 6u);
  EXPECT_EQ(Decode(std::string("\xc4\xe1\x7e\x6f\x06", 5)).length, 5u);
  EXPECT_EQ(Decode(std::string("\xc5\xf8\x77", 3)).length, 3u);
  // vpxorq 0x40(%rdi),%zmm1,%zmm2 (EVEX, disp8)
  EXPECT_EQ(Decode(std::string("\x62\xf1\xf5\x48\xef\x57\x01", 7)).length, 7u);
  // Truncated: no read past the end.
  EXPECT_FALSE(DecodeX86(std::string("\x48\x8b\x0d\x10\x00", 5), 0).has_value());
  EXPECT_FALSE(DecodeX86(std::string("\x0f", 1), 0).has_value());
}

TEST(DecodeX86Test, FindRipReferencesWalksInstructionByInstruction) {
  // 0x1000: mov 0x10(%rip),%rcx (7) ; 0x1007: lea 0x0(%rip),%rdx (7) ; 0x100e: ret
  const std::string code("\x48\x8b\x0d\x10\x00\x00\x00\x48\x8d\x15\x00\x00\x00\x00\xc3", 15);
  bool complete = false;
  auto refs = FindRipReferences(code, 0x1000, &complete);
  EXPECT_TRUE(complete);
  ASSERT_EQ(refs.size(), 2u);
  EXPECT_EQ(refs[0].target, 0x1017u);
  EXPECT_EQ(refs[0].bytes, 8);
  EXPECT_EQ(refs[1].target, 0x100eu);
  EXPECT_EQ(refs[1].bytes, 0);
}

// objdump's instruction starts in [lo, hi) and the RIP-relative targets it annotates.
struct Objdump {
  std::map<uint64_t, uint64_t> rip_target;  // instruction address -> target (0 if none)
};

Objdump RunObjdump(const std::string& bin, uint64_t lo, uint64_t hi) {
  Objdump o;
  auto r = RunCommand(absl::StrCat("objdump -d -w --no-show-raw-insn --start-address=0x",
                                   absl::Hex(lo), " --stop-address=0x", absl::Hex(hi), " '", bin,
                                   "'"));
  EXPECT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view l = absl::StripLeadingAsciiWhitespace(line);
    const size_t colon = l.find(":\t");
    uint64_t addr;
    if (colon == absl::string_view::npos || !absl::SimpleHexAtoi(l.substr(0, colon), &addr)) {
      continue;
    }
    uint64_t target = 0;
    if (l.find("(%rip)") != absl::string_view::npos) {
      const size_t hash = l.rfind("# ");
      if (hash != absl::string_view::npos) {
        std::vector<absl::string_view> f = absl::StrSplit(l.substr(hash + 2), ' ');
        absl::SimpleHexAtoi(f[0], &target);
      }
    }
    o.rip_target[addr] = target;
  }
  return o;
}

class DecodeGoBinaryTest
    : public ::testing::TestWithParam<std::tuple<std::string, bool /*stripped PIE*/>> {};

// Every Go function of a real binary walks from entry to end on objdump's instruction
// boundaries, with objdump's RIP-relative targets.
TEST_P(DecodeGoBinaryTest, AgreesWithObjdumpOnEveryGoFunction) {
  const auto& [version, stripped] = GetParam();
  const std::string dir = MakeTempDir("x86_decode");
  auto bin = BuildGo(version, TestDataDir() + "/targets/heap_go_split",
                     stripped ? kGoStrippedPie : "", dir + "/prog");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto elf = ElfFile::Open(*bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  auto pcln = GoPclntab::FromElf(**elf);
  ASSERT_TRUE(pcln.ok()) << pcln.status();
  const Objdump od = RunObjdump(*bin, (*pcln)->min_pc(), (*pcln)->max_pc());
  ASSERT_GT(od.rip_target.size(), 10000u);
  size_t funcs = 0, insns = 0, refs = 0, mismatches = 0;
  for (uint64_t pc = (*pcln)->min_pc(); pc < (*pcln)->max_pc();) {
    auto f = (*pcln)->LookupFunc(pc);
    ASSERT_TRUE(f.ok()) << f.status();
    auto code = GoFunctionCode(**elf, *f);
    ASSERT_TRUE(code.ok()) << code.status();
    pc = f->end;
    // The one Go function that embeds data in its code: a jump over marker bytes (the
    // signature tools look for in binaries).
    if (absl::StartsWith(f->name, "crypto/internal/boring/sig.")) continue;
    ++funcs;
    for (size_t i = 0; i < code->size();) {
      auto insn = DecodeX86(*code, i);
      const uint64_t at = f->entry + i;
      auto it = od.rip_target.find(at);
      if (!insn || it == od.rip_target.end()) {
        ADD_FAILURE() << f->name << " at 0x" << std::hex << at << std::dec << ": decoded "
                      << (insn ? insn->length : 0) << ", objdump has no instruction here";
        ++mismatches;
        break;
      }
      ++insns;
      if (insn->rip_relative) {
        ++refs;
        EXPECT_EQ(at + insn->length + insn->disp, it->second) << f->name << " 0x" << std::hex << at;
      } else {
        EXPECT_EQ(it->second, 0u) << f->name << " 0x" << std::hex << at;
      }
      i += insn->length;
    }
    if (mismatches > 5) break;
  }
  printf("go%s %s: %zu functions, %zu instructions, %zu RIP-relative operands\n", version.c_str(),
         stripped ? "stripped PIE" : "plain", funcs, insns, refs);
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(refs, 1000u);
}

INSTANTIATE_TEST_SUITE_P(GoVersions, DecodeGoBinaryTest,
                         ::testing::Combine(::testing::ValuesIn(OldestAndNewestGo()),
                                            ::testing::Bool()),
                         [](const auto& i) {
                           return GoVersionName(std::get<0>(i.param)) +
                                  (std::get<1>(i.param) ? "_stripped_pie" : "_plain");
                         });

}  // namespace
}  // namespace pprof_sidecar
