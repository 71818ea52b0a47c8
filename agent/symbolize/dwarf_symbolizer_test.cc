#include "agent/symbolize/dwarf_symbolizer.h"

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildNative;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string SrcPath(const std::string& name) {
  return TestDataDir() + "/targets/native_inline/" + name;
}

// Line numbers of the "// LINE:<marker>" comments in a source file.
std::map<std::string, int64_t> Markers(const std::string& path) {
  testing::CommandResult r = RunCommand("cat '" + path + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, int64_t> out;
  int64_t n = 0;
  for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
    ++n;
    size_t pos = line.find("// LINE:");
    if (pos == absl::string_view::npos) continue;
    absl::string_view m = line.substr(pos + 8);
    size_t end = m.find_first_of(" \t");
    out[std::string(m.substr(0, end))] = n;
  }
  return out;
}

struct Sym {
  uint64_t addr = 0;
  uint64_t size = 0;
};

// Defined text symbols with a size, from `nm -S`.
std::map<std::string, Sym> TextSymbols(const std::string& bin) {
  testing::CommandResult r = RunCommand("nm -S --defined-only '" + bin + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, Sym> out;
  for (absl::string_view line : absl::StrSplit(r.output, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() != 4) continue;
    if (f[2] != "T" && f[2] != "t" && f[2] != "W") continue;
    Sym s;
    if (!absl::SimpleHexAtoi(f[0], &s.addr) || !absl::SimpleHexAtoi(f[1], &s.size)) continue;
    if (s.size > 0) out[f[3]] = s;
  }
  return out;
}

std::string Basename(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

// One frame as printed by `addr2line -f -i -C`.
struct A2lFrame {
  std::string function;  // "" for ??
  std::string file;      // "" for ??
  int64_t line = 0;      // 0 for ? or 0
};

// Runs addr2line -a -f -i -C on `addrs`, returning the frames (innermost first) per address.
std::map<uint64_t, std::vector<A2lFrame>> Addr2Line(const std::string& bin,
                                                    const std::vector<uint64_t>& addrs) {
  std::map<uint64_t, std::vector<A2lFrame>> out;
  for (size_t start = 0; start < addrs.size(); start += 500) {
    std::string cmd = "addr2line -a -f -i -C -e '" + bin + "'";
    for (size_t i = start; i < addrs.size() && i < start + 500; ++i) {
      absl::StrAppend(&cmd, " 0x", absl::Hex(addrs[i]));
    }
    testing::CommandResult r = RunCommand(cmd);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::vector<std::string> lines = absl::StrSplit(r.output, '\n', absl::SkipEmpty());
    uint64_t cur = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (absl::StartsWith(lines[i], "0x")) {
        EXPECT_TRUE(absl::SimpleHexAtoi(lines[i], &cur)) << lines[i];
        out[cur];
        continue;
      }
      if (i + 1 >= lines.size()) break;
      A2lFrame f;
      f.function = lines[i] == "??" ? "" : lines[i];
      std::string loc = lines[++i];
      size_t d = loc.find(" (discriminator");
      if (d != std::string::npos) loc.resize(d);
      size_t colon = loc.rfind(':');
      std::string file = loc.substr(0, colon);
      f.file = file == "??" ? "" : file;
      int64_t line = 0;
      if (colon != std::string::npos && absl::SimpleAtoi(loc.substr(colon + 1), &line))
        f.line = line;
      out[cur].push_back(f);
    }
  }
  return out;
}

// Function names (innermost first) for one address from llvm-symbolizer.
std::vector<std::string> LlvmSymbolizerNames(const std::string& bin, uint64_t addr) {
  testing::CommandResult r = RunCommand(absl::StrFormat(
      "llvm-symbolizer --functions=linkage --demangle --inlines --obj='%s' 0x%x", bin, addr));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> lines = absl::StrSplit(r.output, '\n', absl::SkipEmpty());
  std::vector<std::string> names;
  for (size_t i = 0; i < lines.size(); i += 2) names.push_back(lines[i]);
  return names;
}

std::string Describe(const SourceLines& sl) {
  std::vector<std::string> parts;
  for (const auto& l : sl) {
    parts.push_back(absl::StrCat(l.function, " [", l.system_name, "] ", l.file, ":", l.line,
                                 " start=", l.start_line));
  }
  return absl::StrJoin(parts, " | ");
}

std::string Describe(const std::vector<A2lFrame>& fr) {
  std::vector<std::string> parts;
  for (const auto& f : fr) parts.push_back(absl::StrCat(f.function, " ", f.file, ":", f.line));
  return absl::StrJoin(parts, " | ");
}

// Checks that Symbolize agrees with addr2line on every address: function names, file paths and
// lines of every inlined frame. Returns the number of addresses that had DWARF frames.
int ExpectAgreesWithAddr2line(const DwarfSymbolizer& sym, const std::string& bin,
                              const std::vector<uint64_t>& addrs) {
  auto want = Addr2Line(bin, addrs);
  int with_dwarf = 0;
  int mismatches = 0;
  for (uint64_t a : addrs) {
    const std::vector<A2lFrame>& w = want[a];
    absl::StatusOr<SourceLines> got = sym.Symbolize(a);
    bool a2l_has_dwarf = !w.empty() && !(w.size() == 1 && w[0].file.empty() && w[0].line == 0);
    if (!a2l_has_dwarf) {
      // addr2line fell back to the symbol table (or found nothing): no DWARF covers it.
      EXPECT_FALSE(got.ok()) << absl::StrFormat("0x%x: got %s", a, Describe(*got));
      if (got.ok()) ++mismatches;
      continue;
    }
    ++with_dwarf;
    if (!got.ok()) {
      ADD_FAILURE() << absl::StrFormat("0x%x: %s; addr2line: %s", a, got.status().ToString(),
                                       Describe(w));
      ++mismatches;
      continue;
    }
    bool same = got->size() == w.size();
    bool names_same = same;
    for (size_t i = 0; same && i < w.size(); ++i) {
      const SourceLine& g = (*got)[i];
      same = g.line == w[i].line && g.file == w[i].file;
      names_same = names_same && g.function == w[i].function;
    }
    if (same && !names_same) {
      // binutils names an innermost inlined function that has no DW_AT_linkage_name after the
      // ELF symbol of its caller (e.g. glibc's atol inlined into main prints "main");
      // llvm-symbolizer then breaks the tie.
      // Each frame's name must match addr2line or llvm-symbolizer.
      std::vector<std::string> llvm = LlvmSymbolizerNames(bin, a);
      names_same = llvm.size() == got->size();
      for (size_t i = 0; names_same && i < llvm.size(); ++i) {
        names_same = llvm[i] == (*got)[i].function || w[i].function == (*got)[i].function;
      }
      EXPECT_TRUE(names_same) << absl::StrFormat(
          "0x%x:\n  ours:      %s\n  addr2line: %s\n  llvm: %s", a, Describe(*got), Describe(w),
          absl::StrJoin(llvm, " | "));
    }
    same = same && names_same;
    EXPECT_TRUE(same) << absl::StrFormat("0x%x:\n  ours:      %s\n  addr2line: %s", a,
                                         Describe(*got), Describe(w));
    if (!same) ++mismatches;
    if (mismatches > 20) {
      ADD_FAILURE() << "too many mismatches, stopping";
      break;
    }
  }
  return with_dwarf;
}

// Distinct addresses across the text: every byte of each sized function (up to `per_func`).
std::vector<uint64_t> TextAddresses(const std::string& bin, uint64_t per_func = 4096) {
  std::set<uint64_t> out;  // aliases (e.g. C1/C2 constructors) share addresses
  for (const auto& [name, s] : TextSymbols(bin)) {
    for (uint64_t off = 0; off < s.size && off < per_func; ++off) out.insert(s.addr + off);
  }
  return std::vector<uint64_t>(out.begin(), out.end());
}

struct Built {
  std::string dir;
  std::string bin;
};

Built Build(const std::string& src, const std::string& flags, const std::string& name) {
  Built b;
  b.dir = MakeTempDir("dwarfsym");
  b.bin = b.dir + "/" + name;
  absl::StatusOr<std::string> r = BuildNative({SrcPath(src)}, flags, b.bin);
  EXPECT_TRUE(r.ok()) << r.status();
  return b;
}

struct InlineCase {
  std::string src;
  std::string flags;
  std::string caller_sym;     // nm name of the physical caller
  std::string caller_prefix;  // expected start of its display name
  std::string callee_prefix;  // expected start of the inlined helper's display name
  std::string callee_system_prefix;
  std::string decl_marker;  // caller's first line
  std::string call_marker;  // call site of the helper in the caller
};

class InlineTest : public ::testing::TestWithParam<InlineCase> {};

TEST_P(InlineTest, InlinedFramesAndAgreementWithAddr2line) {
  const InlineCase& c = GetParam();
  Built b = Build(c.src, c.flags, "prog");
  auto marks = Markers(SrcPath(c.src));
  ASSERT_TRUE(marks.count(c.decl_marker) && marks.count(c.call_marker) && marks.count("mix_decl") &&
              marks.count("mix_end"));
  auto syms = TextSymbols(b.bin);
  ASSERT_TRUE(syms.count(c.caller_sym)) << c.caller_sym << " not in nm output of " << b.bin;
  Sym caller = syms[c.caller_sym];

  absl::StatusOr<std::unique_ptr<DwarfSymbolizer>> sym = DwarfSymbolizer::Open(b.bin);
  ASSERT_TRUE(sym.ok()) << sym.status();
  EXPECT_EQ((*sym)->debug_file(), b.bin);

  int inlined_pcs = 0;
  for (uint64_t pc = caller.addr; pc < caller.addr + caller.size; ++pc) {
    absl::StatusOr<SourceLines> got = (*sym)->Symbolize(pc);
    ASSERT_TRUE(got.ok()) << absl::StrFormat("0x%x: %s", pc, got.status().ToString());
    ASSERT_FALSE(got->empty());
    const SourceLine& phys = got->back();
    EXPECT_THAT(phys.function, StartsWith(c.caller_prefix)) << Describe(*got);
    EXPECT_EQ(phys.start_line, marks[c.decl_marker]) << Describe(*got);
    EXPECT_EQ(Basename(phys.file), Basename(c.src)) << Describe(*got);
    if (got->size() == 2) {
      ++inlined_pcs;
      const SourceLine& inner = (*got)[0];
      EXPECT_THAT(inner.function, StartsWith(c.callee_prefix)) << Describe(*got);
      EXPECT_THAT(inner.system_name, StartsWith(c.callee_system_prefix)) << Describe(*got);
      EXPECT_EQ(inner.start_line, marks["mix_decl"]);
      EXPECT_GE(inner.line, marks["mix_decl"]) << Describe(*got);
      EXPECT_LE(inner.line, marks["mix_end"]) << Describe(*got);
      EXPECT_EQ(Basename(inner.file), Basename(c.src));
      EXPECT_EQ(phys.line, marks[c.call_marker]) << "call site: " << Describe(*got);
    } else {
      EXPECT_EQ(got->size(), 1u) << Describe(*got);
    }
  }
  EXPECT_GT(inlined_pcs, 0) << "no pc of " << c.caller_sym << " resolved to the inlined helper";

  int n = ExpectAgreesWithAddr2line(**sym, b.bin, TextAddresses(b.bin));
  EXPECT_GT(n, 50);
}

INSTANTIATE_TEST_SUITE_P(
    Native, InlineTest,
    ::testing::Values(
        InlineCase{"inline.c", "-O2 -g", "outer", "outer", "mix", "mix", "outer_decl",
                   "outer_call_mix"},
        InlineCase{"inline.c", "-O0 -g", "outer", "outer", "mix", "mix", "outer_decl",
                   "outer_call_mix"},
        InlineCase{"inline.c", "-O2 -gdwarf-4 -gz", "outer", "outer", "mix", "mix", "outer_decl",
                   "outer_call_mix"},
        InlineCase{"inline.cc", "-O2 -g", "_ZN4demo6Hasher3RunEl", "demo::Hasher::Run(long)",
                   "demo::Hasher::Mix(long)", "_ZN4demo6Hasher3Mix", "run_decl", "run_call_mix"},
        InlineCase{"inline.cc", "-O0 -g", "_ZN4demo6Hasher3RunEl", "demo::Hasher::Run(long)",
                   "demo::Hasher::Mix(long)", "_ZN4demo6Hasher3Mix", "run_decl", "run_call_mix"},
        InlineCase{"inline.cc", "-O2 -g -fno-omit-frame-pointer -fPIE -pie",
                   "_ZN4demo6Hasher3RunEl", "demo::Hasher::Run(long)", "demo::Hasher::Mix(long)",
                   "_ZN4demo6Hasher3Mix", "run_decl", "run_call_mix"}),
    [](const ::testing::TestParamInfo<InlineCase>& info) {
      std::string n =
          absl::StrCat(info.param.src == "inline.c" ? "C" : "Cxx", "_", info.param.flags);
      for (char& ch : n) {
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return n;
    });

TEST(DwarfSymbolizerTest, CxxTemplateNameDemangled) {
  Built b = Build("inline.cc", "-O2 -g", "prog");
  auto marks = Markers(SrcPath("inline.cc"));
  auto syms = TextSymbols(b.bin);
  auto sym = DwarfSymbolizer::Open(b.bin);
  ASSERT_TRUE(sym.ok()) << sym.status();
  int found = 0;
  for (const auto& [name, s] : syms) {
    if (!absl::StartsWith(name, "_ZN4demo3Sum")) continue;
    ++found;
    auto got = (*sym)->Symbolize(s.addr);
    ASSERT_TRUE(got.ok()) << got.status();
    // Full __cxa_demangle output: templates carry their return type.
    EXPECT_THAT(got->back().function, StartsWith("long demo::Sum<long>(std::vector<long"));
    EXPECT_EQ(got->back().system_name, name);
    EXPECT_EQ(got->back().start_line, marks["sum_decl"]);
  }
  EXPECT_EQ(found, 1);
}

TEST(DwarfSymbolizerTest, NoDebugInfoIsNotFound) {
  Built b = Build("inline.c", "-O2", "nodebug");
  auto sym = DwarfSymbolizer::Open(b.bin);
  ASSERT_FALSE(sym.ok());
  EXPECT_EQ(sym.status().code(), absl::StatusCode::kNotFound) << sym.status();
  EXPECT_THAT(sym.status().message(), HasSubstr(b.bin));
}

TEST(DwarfSymbolizerTest, OpenErrorsNameThePath) {
  std::string dir = MakeTempDir("dwarfsym");
  auto missing = DwarfSymbolizer::Open(dir + "/missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir + "/missing"));
  ASSERT_EQ(RunCommand("echo 'not an elf' > '" + dir + "/text'").exit_code, 0);
  auto text = DwarfSymbolizer::Open(dir + "/text");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr(dir + "/text"));
}

std::string BuildIdOf(const std::string& bin) {
  testing::CommandResult r = RunCommand("readelf -n '" + bin + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  size_t p = r.output.find("Build ID: ");
  if (p == std::string::npos) return "";
  std::string id = r.output.substr(p + 10);
  return std::string(absl::StripAsciiWhitespace(id.substr(0, id.find('\n'))));
}

TEST(DwarfSymbolizerTest, SeparateDebugFileByBuildId) {
  Built b = Build("inline.cc", "-O2 -g -Wl,--build-id", "prog");
  std::string full = b.dir + "/prog.full";
  ASSERT_EQ(RunCommand("cp '" + b.bin + "' '" + full + "'").exit_code, 0);
  std::string id = BuildIdOf(b.bin);
  ASSERT_GE(id.size(), 4u);
  std::string root = b.dir + "/root";
  std::string dbgdir = root + "/usr/lib/debug/.build-id/" + id.substr(0, 2);
  std::string dbg = dbgdir + "/" + id.substr(2) + ".debug";
  ASSERT_EQ(RunCommand("mkdir -p '" + dbgdir + "'").exit_code, 0);
  auto r = RunCommand("objcopy --only-keep-debug '" + b.bin + "' '" + dbg + "' && objcopy " +
                      "--strip-debug '" + b.bin + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // Without the root the debug file is not found.
  auto none = DwarfSymbolizer::Open(b.bin);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr(id));

  auto sym = DwarfSymbolizer::Open(b.bin, root + "/");
  ASSERT_TRUE(sym.ok()) << sym.status();
  EXPECT_EQ((*sym)->debug_file(), dbg);
  auto ref = DwarfSymbolizer::Open(full);
  ASSERT_TRUE(ref.ok()) << ref.status();
  int compared = 0;
  for (uint64_t a : TextAddresses(b.bin)) {
    auto want = (*ref)->Symbolize(a);
    auto got = (*sym)->Symbolize(a);
    ASSERT_EQ(got.ok(), want.ok()) << absl::StrFormat("0x%x", a);
    if (!want.ok()) continue;
    ++compared;
    EXPECT_EQ(*got, *want) << absl::StrFormat("0x%x", a);
  }
  EXPECT_GT(compared, 50);

  // A debug file with a different build id is rejected.
  Built other = Build("inline.c", "-O2 -g -Wl,--build-id", "other");
  ASSERT_EQ(RunCommand("cp '" + other.bin + "' '" + dbg + "'").exit_code, 0);
  auto wrong = DwarfSymbolizer::Open(b.bin, root);
  EXPECT_FALSE(wrong.ok());
}

TEST(DwarfSymbolizerTest, SeparateDebugFileByDebuglink) {
  Built b = Build("inline.c", "-O2 -g", "prog");
  std::string dbg_dir = b.dir + "/.debug";
  auto r = RunCommand("mkdir -p '" + dbg_dir + "' && cd '" + b.dir +
                      "' && objcopy --only-keep-debug prog .debug/prog.dbg && objcopy " +
                      "--strip-debug --add-gnu-debuglink=.debug/prog.dbg prog");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto sym = DwarfSymbolizer::Open(b.bin);
  ASSERT_TRUE(sym.ok()) << sym.status();
  EXPECT_EQ((*sym)->debug_file(), dbg_dir + "/prog.dbg");
  auto outer = TextSymbols(b.bin)["outer"];
  auto got = (*sym)->Symbolize(outer.addr);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->back().function, "outer");
}

TEST(DwarfSymbolizerTest, ConcurrentLookupsAgreeAndAreFast) {
  Built b = Build("inline.cc", "-O2 -g", "prog");
  auto sym = DwarfSymbolizer::Open(b.bin);
  ASSERT_TRUE(sym.ok()) << sym.status();
  std::vector<uint64_t> addrs = TextAddresses(b.bin);
  ASSERT_FALSE(addrs.empty());
  std::vector<absl::StatusOr<SourceLines>> want;
  for (uint64_t a : addrs) want.push_back((*sym)->Symbolize(a));

  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        for (size_t i = 0; i < addrs.size(); ++i) {
          auto got = (*sym)->Symbolize(addrs[i]);
          if (got.ok() != want[i].ok() || (got.ok() && *got != *want[i])) ++bad[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[t], 0);

  // A fresh symbolizer (no result cache) gives the same answers; its speed is a benchmark's job.
  auto fresh = DwarfSymbolizer::Open(b.bin);
  ASSERT_TRUE(fresh.ok());
  for (size_t i = 0; i < addrs.size(); ++i) {
    auto got = (*fresh)->Symbolize(addrs[i]);
    ASSERT_EQ(got.ok(), want[i].ok());
    if (got.ok()) EXPECT_EQ(*got, *want[i]);
  }
}

// Trim frees the indexes (for compressed DWARF, the decompressed image) and keeps the results:
// answers before and after, for addresses seen before and new ones, equal those of a symbolizer
// reading the same DWARF uncompressed.
TEST(DwarfSymbolizerTest, TrimThenReopenGivesTheSameAnswers) {
  Built b = Build("inline.cc", "-O2 -g -gz", "prog");
  std::string plain = b.dir + "/prog.plain";
  auto r = RunCommand("objcopy --decompress-debug-sections '" + b.bin + "' '" + plain + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_NE(RunCommand("readelf -S -W '" + b.bin + "' | grep -E 'debug_info.* C '").output, "")
      << "test binary's DWARF is not compressed";
  auto sym = DwarfSymbolizer::Open(b.bin);
  ASSERT_TRUE(sym.ok()) << sym.status();
  auto ref = DwarfSymbolizer::Open(plain);
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::vector<uint64_t> addrs = TextAddresses(b.bin);
  ASSERT_GT(addrs.size(), 100u);
  int compared = 0;
  for (int round = 0; round < 3; ++round) {
    // Round 0: the first half; then all, after a Trim each.
    const size_t n = round == 0 ? addrs.size() / 2 : addrs.size();
    for (size_t i = 0; i < n; ++i) {
      auto want = (*ref)->Symbolize(addrs[i]);
      auto got = (*sym)->Symbolize(addrs[i]);
      ASSERT_EQ(got.ok(), want.ok()) << absl::StrFormat("round %d 0x%x", round, addrs[i]);
      if (!want.ok()) continue;
      ++compared;
      EXPECT_EQ(*got, *want) << absl::StrFormat("round %d 0x%x", round, addrs[i]);
    }
    (*sym)->Trim();
  }
  EXPECT_GT(compared, 100);
}

// glibc as Debian ships it: stripped, its DWARF in libc6-dbg's separate debug file (found by
// build id), compressed. Frames in its functions get the file:line and inlined frames
// addr2line reports (binutils names some functions after other aliases and spells DWARF 5 paths
// differently: file basenames, lines and depth are compared), before and after a Trim, and the
// same answers as from a decompressed copy of the debug file.
TEST(DwarfSymbolizerTest, GlibcFromItsCompressedDebugFile) {
  std::string libc =
      std::string(absl::StripAsciiWhitespace(RunCommand("gcc -print-file-name=libc.so.6").output));
  libc = std::string(absl::StripAsciiWhitespace(RunCommand("realpath '" + libc + "'").output));
  auto sym = DwarfSymbolizer::Open(libc);
  ASSERT_TRUE(sym.ok()) << sym.status() << " (install libc6-dbg: scripts/install-deps.sh)";
  const std::string dbg = (*sym)->debug_file();
  EXPECT_THAT(dbg, StartsWith("/usr/lib/debug/.build-id/"));
  std::string dir = MakeTempDir("dwarfsym");
  std::string plain = dir + "/libc.debug";
  auto r = RunCommand("objcopy --decompress-debug-sections '" + dbg + "' '" + plain + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto ref = DwarfSymbolizer::Open(plain);
  ASSERT_TRUE(ref.ok()) << ref.status();

  auto syms = TextSymbols(dbg);
  std::vector<uint64_t> addrs;
  for (const char* fn :
       {"__printf_fp_l", "msort_with_tmp.part.0", "____strtod_l_internal", "__qsort_r"}) {
    ASSERT_TRUE(syms.count(fn)) << fn << " not in " << dbg;
    const Sym& s = syms[fn];
    for (uint64_t off = 0; off < s.size && off < 2048; off += 3) addrs.push_back(s.addr + off);
  }
  auto a2l = Addr2Line(dbg, addrs);
  int inlined = 0, agree = 0;
  for (int round = 0; round < 2; ++round) {
    for (uint64_t a : addrs) {
      auto got = (*sym)->Symbolize(a);
      auto want = (*ref)->Symbolize(a);
      ASSERT_EQ(got.ok(), want.ok()) << absl::StrFormat("0x%x", a);
      if (!got.ok()) continue;
      EXPECT_EQ(*got, *want) << absl::StrFormat("0x%x", a);
      if (round > 0) continue;
      if (got->size() > 1) ++inlined;
      const std::vector<A2lFrame>& w = a2l[a];
      bool same = w.size() == got->size();
      for (size_t i = 0; same && i < w.size(); ++i) {
        same = (*got)[i].line == w[i].line && Basename((*got)[i].file) == Basename(w[i].file);
      }
      EXPECT_TRUE(same) << absl::StrFormat("0x%x:\n  ours:      %s\n  addr2line: %s", a,
                                           Describe(*got), Describe(w));
      agree += same;
    }
    (*sym)->Trim();
  }
  EXPECT_GT(agree, static_cast<int>(addrs.size() * 9 / 10));
  EXPECT_GT(inlined, 10);
}

}  // namespace
}  // namespace pprof_sidecar
