// CfiTable against binutils: every row that `readelf --debug-dump=frames-interp` prints for real
// binaries (libc, and programs built here with -O2 -fomit-frame-pointer, with and without
// .eh_frame_hdr, and with .debug_frame only) must be what CfiTable::Find returns at that pc.
#include "agent/unwind/cfi.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/symbolize/elf_file.h"
#include "agent/unwind/unwinder.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildNative;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;

struct ReadelfRow {
  uint64_t loc = 0, fde_end = 0;
  int fde = 0;
  std::string section;       // ".eh_frame" or ".debug_frame"
  std::string cfa, rbp, ra;  // as printed ("rsp+8", "exp", "c-16", "u"; "" if no column)
};

// Parses frames-interp output into rows with the pc range of their FDE.
std::vector<ReadelfRow> ParseReadelf(const std::string& text) {
  std::vector<ReadelfRow> rows;
  std::string section;
  bool in_fde = false;
  uint64_t fde_end = 0;
  int fde_index = 0;
  std::vector<std::string> cols;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "Contents of the ")) {
      section = absl::StrContains(line, ".debug_frame") ? ".debug_frame" : ".eh_frame";
      continue;
    }
    std::vector<absl::string_view> f;
    for (absl::string_view x : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      // "r9 (r9)": the register's name in parentheses belongs to the previous field.
      if (absl::StartsWith(x, "(") && !f.empty()) continue;
      f.push_back(x);
    }
    if (f.empty()) continue;
    if (f.size() >= 2 && f[1] == "ZERO") {
      in_fde = false;
      continue;
    }
    if (f.size() >= 4 && (f[3] == "FDE" || f[3] == "CIE")) {
      in_fde = f[3] == "FDE";
      ++fde_index;
      if (in_fde) {
        for (absl::string_view x : f) {
          if (absl::ConsumePrefix(&x, "pc=")) {
            std::vector<absl::string_view> r = absl::StrSplit(x, "..");
            if (r.size() != 2 || !absl::SimpleHexAtoi(r[1], &fde_end)) in_fde = false;
          }
        }
      }
      continue;
    }
    if (f[0] == "LOC") {
      cols.clear();
      for (absl::string_view x : f) cols.emplace_back(x);
      continue;
    }
    uint64_t loc;
    if (!in_fde || f.size() != cols.size() || !absl::SimpleHexAtoi(f[0], &loc)) continue;
    ReadelfRow r;
    r.fde = fde_index;
    r.loc = loc;
    r.fde_end = fde_end;
    r.section = section;
    for (size_t i = 1; i < cols.size(); ++i) {
      if (cols[i] == "CFA") r.cfa = std::string(f[i]);
      if (cols[i] == "rbp") r.rbp = std::string(f[i]);
      if (cols[i] == "ra") r.ra = std::string(f[i]);
    }
    rows.push_back(r);
  }
  return rows;
}

std::string CfaString(const CfiRow& row) {
  if (row.cfa_kind == CfiRow::kCfaExpression) return "exp";
  static const char* const kNames[] = {"rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
                                       "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
  std::string reg = row.cfa_reg < 16 ? kNames[row.cfa_reg] : "r" + std::to_string(row.cfa_reg);
  return reg + (row.cfa_offset >= 0 ? "+" : "") + std::to_string(row.cfa_offset);
}

// readelf's notation for a register rule ("u" for undefined and unspecified alike).
std::string RuleString(const CfiRegRule& r) {
  switch (r.kind) {
    case CfiRegRule::kSameValue:
      return "u";
    case CfiRegRule::kUndefined:
      return "u";
    case CfiRegRule::kOffset:
      return "c" + std::string(r.offset >= 0 ? "+" : "") + std::to_string(r.offset);
    case CfiRegRule::kValOffset:
      return "v" + std::string(r.offset >= 0 ? "+" : "") + std::to_string(r.offset);
    case CfiRegRule::kRegister:
      return "r" + std::to_string(r.reg);
    case CfiRegRule::kExpression:
      return "exp";
    case CfiRegRule::kValExpression:
      return "vexp";
  }
  return "?";
}

// Checks every readelf row of `path` (and the pc just before the next row). Returns rows checked.
size_t CheckAgainstReadelf(const std::string& path, bool expect_hdr) {
  auto elf = ElfFile::Open(path);
  EXPECT_TRUE(elf.ok()) << elf.status();
  if (!elf.ok()) return 0;
  auto table = CfiTable::FromElf(**elf);
  EXPECT_TRUE(table.ok()) << table.status();
  if (!table.ok()) return 0;
  EXPECT_EQ((*table)->uses_eh_frame_hdr(), expect_hdr) << path;
  auto out = RunCommand("readelf --debug-dump=frames-interp '" + path + "' 2>&1");
  // readelf exits 1 on warnings about sections it does not decode; the rows are still printed.
  std::vector<ReadelfRow> rows = ParseReadelf(out.output);
  EXPECT_GT(rows.size(), 10u) << out.output.substr(0, 2000);
  size_t checked = 0, mismatches = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const ReadelfRow& r = rows[i];
    // The last pc of this row: just before the next row of the same FDE, else the FDE's end.
    uint64_t last = r.fde_end - 1;
    if (i + 1 < rows.size() && rows[i + 1].fde == r.fde) {
      last = rows[i + 1].loc - 1;
    }
    for (uint64_t pc : {r.loc, last}) {
      auto row = (*table)->Find(pc);
      if (!row.ok()) {
        if (++mismatches < 10)
          ADD_FAILURE() << path << " pc 0x" << std::hex << pc << ": " << row.status();
        continue;
      }
      ++checked;
      const std::string want_rbp = r.rbp.empty() ? "u" : r.rbp;
      if (CfaString(*row) != r.cfa || RuleString(row->ra) != r.ra ||
          RuleString(row->rbp) != want_rbp) {
        if (++mismatches < 10) {
          ADD_FAILURE() << path << " " << r.section << " pc 0x" << std::hex << pc << ": got "
                        << CfaString(*row) << " ra=" << RuleString(row->ra)
                        << " rbp=" << RuleString(row->rbp) << ", readelf " << r.cfa
                        << " ra=" << r.ra << " rbp=" << want_rbp;
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << path;
  return checked;
}

std::string BuildCTarget(const std::string& name, const std::string& flags) {
  std::string dir = MakeTempDir("cfi_test");
  auto built =
      BuildNative({TestDataDir() + "/targets/unwind_c/unwind_c.c"}, flags, dir + "/" + name);
  EXPECT_TRUE(built.ok()) << built.status();
  return built.ok() ? *built : "";
}

TEST(CfiTest, LibcMatchesReadelf) {
  auto ldd = RunCommand("gcc -print-file-name=libc.so.6");
  std::string libc = std::string(absl::StripAsciiWhitespace(ldd.output));
  if (libc.empty() || libc[0] != '/') libc = "/lib/x86_64-linux-gnu/libc.so.6";
  EXPECT_GT(CheckAgainstReadelf(libc, /*expect_hdr=*/true), 10000u);
}

TEST(CfiTest, OmitFramePointerProgramMatchesReadelf) {
  std::string bin = BuildCTarget("o2", "-O2 -fomit-frame-pointer");
  ASSERT_FALSE(bin.empty());
  EXPECT_GT(CheckAgainstReadelf(bin, true), 10u);
}

TEST(CfiTest, WithoutEhFrameHdrBuildsIndex) {
  std::string bin = BuildCTarget("nohdr", "-O2 -fomit-frame-pointer -Wl,--no-eh-frame-hdr");
  ASSERT_FALSE(bin.empty());
  EXPECT_GT(CheckAgainstReadelf(bin, false), 10u);
}

TEST(CfiTest, DebugFrameOnly) {
  std::string bin =
      BuildCTarget("dbgframe", "-O2 -g -fno-asynchronous-unwind-tables -fno-unwind-tables");
  ASSERT_FALSE(bin.empty());
  auto secs = RunCommand("readelf -S '" + bin + "'");
  ASSERT_TRUE(absl::StrContains(secs.output, ".debug_frame")) << secs.output;
  EXPECT_GT(CheckAgainstReadelf(bin, true), 5u);
}

TEST(CfiTest, StartHasUndefinedReturnAddress) {
  std::string bin = BuildCTarget("start", "-O2");
  ASSERT_FALSE(bin.empty());
  auto elf = ElfFile::Open(bin);
  ASSERT_TRUE(elf.ok());
  auto start = (*elf)->FindSymbol("_start");
  ASSERT_TRUE(start.has_value());
  auto table = CfiTable::FromElf(**elf);
  ASSERT_TRUE(table.ok());
  auto row = (*table)->Find(start->value + 4);
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->ra.kind, CfiRegRule::kUndefined);
}

TEST(CfiTest, PltExpressionEvaluates) {
  // The CFA expression binutils emits for .plt: rsp + 8 + ((rip & 15) >= 11 ? 8 : 0).
  const std::string expr = {'\x77', '\x08', '\x80', '\x00', '\x3f', '\x1a',
                            '\x3b', '\x2a', '\x33', '\x24', '\x22'};
  auto no_read = [](uint64_t, uint64_t*) { return false; };
  uint64_t v = 0;
  ASSERT_TRUE(EvalDwarfExpr(expr, 0x1020, 0x7000, 0, false, 0, no_read, &v));
  EXPECT_EQ(v, 0x7008u);
  ASSERT_TRUE(EvalDwarfExpr(expr, 0x102b, 0x7000, 0, false, 0, no_read, &v));
  EXPECT_EQ(v, 0x7010u);
  EXPECT_FALSE(EvalDwarfExpr(std::string("\x22"), 0, 0, 0, false, 0, no_read, &v));
}

TEST(CfiTest, CorruptSectionsGiveErrors) {
  CfiSections s;
  std::string junk(64, '\xff');
  s.eh_frame = junk;
  auto t = CfiTable::FromSections(s);
  if (t.ok()) EXPECT_FALSE((*t)->Find(0x1000).ok());
  std::string cie_loop = std::string("\x10\x00\x00\x00\x00\x00\x00\x00", 8);  // truncated
  s.eh_frame = cie_loop;
  t = CfiTable::FromSections(s);
  if (t.ok()) EXPECT_FALSE((*t)->Find(0).ok());
}

}  // namespace
}  // namespace pprof_sidecar
