#include "agent/symbolize/go_pclntab.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "agent/symbolize/elf_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::GoVersions;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;

// A frame as runtime.CallersFrames printed it.
struct GoFrame {
  uint64_t pc = 0;  // runtime address (return address already backed up by one)
  uint64_t entry = 0;
  std::string function, file;
  int64_t line = 0;
};

struct GoOutput {
  uint64_t map_start = 0, map_offset = 0;
  bool have_map = false;
  std::vector<std::vector<GoFrame>> stacks;
};

uint64_t Hex(absl::string_view s) {
  uint64_t v = 0;
  EXPECT_TRUE(absl::SimpleHexAtoi(s, &v)) << s;
  return v;
}

GoOutput ParseOutput(const std::string& text) {
  GoOutput out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "MAP ")) {
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
      out.map_start = Hex(f[1]);
      out.map_offset = Hex(f[2]);
      out.have_map = true;
    } else if (absl::StartsWith(line, "STACK ")) {
      out.stacks.emplace_back();
    } else if (absl::StartsWith(line, "FRAME ")) {
      std::vector<std::string> f = absl::StrSplit(line.substr(6), '\t');
      EXPECT_EQ(f.size(), 5u) << line;
      if (f.size() != 5 || out.stacks.empty()) continue;
      GoFrame g;
      g.pc = Hex(f[0]);
      g.entry = Hex(f[1]);
      g.function = f[2];
      g.file = f[3];
      EXPECT_TRUE(absl::SimpleAtoi(f[4], &g.line));
      out.stacks.back().push_back(g);
    }
  }
  return out;
}

std::string Describe(const SourceLines& lines) {
  std::string s;
  for (const auto& l : lines) absl::StrAppend(&s, "  ", l.function, " ", l.file, ":", l.line, "\n");
  return s;
}

struct Flavor {
  const char* name;
  const char* flags;
};
// Two compilations per Go release (plain, and PIE with -trimpath), each linked two ways.
const Flavor kFlavors[] = {
    {"default", ""},
    {"stripped", "-ldflags='-s -w'"},
    {"stripped_pie", ::pprof_sidecar::testing::kGoStrippedPie},
    // External linking: no .gopclntab section at all, moduledata filled by dynamic relocations.
    {"extld_stripped_pie", "-buildmode=pie -trimpath -ldflags='-linkmode=external -s -w'"},
};

class GoFramesTest : public ::testing::TestWithParam<std::tuple<std::string, Flavor>> {};

// Builds tests/targets/go_frames, runs it, and checks that symbolizing every PC it captured gives
// exactly the frames runtime.CallersFrames reported, including inline expansion.
TEST_P(GoFramesTest, MatchesRuntimeCallersFrames) {
  const std::string version = std::get<0>(GetParam());
  const Flavor flavor = std::get<1>(GetParam());
  const std::string dir = MakeTempDir("go_frames");
  auto bin = BuildGo(version, TestDataDir() + "/targets/go_frames", flavor.flags, dir + "/prog");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto run = RunCommand("'" + *bin + "'");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  GoOutput go = ParseOutput(run.output);
  ASSERT_TRUE(go.have_map) << run.output;
  ASSERT_GE(go.stacks.size(), 6u) << run.output;

  auto elf = ElfFile::Open(*bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  auto tab = GoPclntab::FromElf(**elf);
  ASSERT_TRUE(tab.ok()) << tab.status();
  EXPECT_EQ((*tab)->version_family(), version == "1.19" ? "1.18-1.19" : "1.20+");
  // What moved between releases, found without knowing the release: the wrapper funcID (the
  // last of the enum, per release's source), moduledata's bounds and gofunc (word 38/40/43).
  static const std::map<std::string, int> kWrapperFuncId = {
      {"1.19", 21}, {"1.20", 21}, {"1.21", 21}, {"1.22", 22}, {"1.23", 22},
      {"1.24", 22}, {"1.25", 23}, {"1.26", 23}, {"1.27", 23}};
  ASSERT_TRUE(kWrapperFuncId.count(version)) << "add go" << version << "'s FuncIDWrapper";
  EXPECT_EQ((*tab)->wrapper_func_id(), kWrapperFuncId.at(version));
  ASSERT_TRUE((*tab)->module_data().has_value());
  const GoPclntab::ModuleData& md = *(*tab)->module_data();
  EXPECT_NE(md.gofunc, 0u);
  EXPECT_LT(md.noptrdata, md.enoptrdata);
  EXPECT_LT(md.bss, md.ebss);
  EXPECT_LE(md.enoptrdata, md.bss);
  for (const auto& [name, value] : std::vector<std::pair<const char*, uint64_t>>{
           {"runtime.firstmoduledata", md.addr}, {"runtime.text", md.text},
           {"runtime.noptrdata", md.noptrdata}, {"runtime.bss", md.bss},
           {"runtime.enoptrbss", md.enoptrbss}, {"go:func.*", md.gofunc},
           {"go.func.*", md.gofunc}}) {
    if (auto sym = (*elf)->FindSymbol(name)) EXPECT_EQ(value, sym->value) << name;
  }
  auto map_vaddr = (*elf)->FileOffsetToVaddr(go.map_offset);
  ASSERT_TRUE(map_vaddr.has_value());
  const uint64_t bias = go.map_start - *map_vaddr;
  if (std::string(flavor.flags).find("pie") == std::string::npos) EXPECT_EQ(bias, 0u);

  int inlined_chains = 0;
  int frames_checked = 0;
  std::map<std::string, int> seen;
  for (const auto& stack : go.stacks) {
    size_t i = 0;
    while (i < stack.size()) {
      const GoFrame& top = stack[i];
      auto lines = (*tab)->Symbolize(top.pc - bias);
      ASSERT_TRUE(lines.ok()) << lines.status() << " at " << std::hex << top.pc;
      ASSERT_FALSE(lines->empty());
      ASSERT_LE(i + lines->size(), stack.size()) << Describe(*lines);
      for (size_t k = 0; k < lines->size(); ++k) {
        const GoFrame& want = stack[i + k];
        const SourceLine& got = (*lines)[k];
        // The program reports runtime.Frame.Function: the name as Go prints it.
        EXPECT_EQ((*tab)->PrintName(got.function), want.function)
            << "frame " << i + k << "\n" << Describe(*lines);
        EXPECT_EQ(got.system_name, got.function);
        EXPECT_EQ(got.file, want.file) << want.function;
        EXPECT_EQ(got.line, want.line) << want.function;
        if (version != "1.19") EXPECT_GT(got.start_line, 0) << want.function;
        if (version != "1.19") EXPECT_LE(got.start_line, got.line) << want.function;
        // Every frame of one physical frame shares its entry; the caller-side virtual PCs that
        // Go inserted symbolize to the outer part of the same chain.
        EXPECT_EQ(want.entry, top.entry);
        if (k > 0) {
          auto outer = (*tab)->Symbolize(want.pc - bias);
          ASSERT_TRUE(outer.ok());
          EXPECT_EQ(*outer, SourceLines(lines->begin() + k, lines->end()));
        }
        seen[got.function]++;
        ++frames_checked;
      }
      auto fn = (*tab)->LookupFunc(top.pc - bias);
      ASSERT_TRUE(fn.ok()) << fn.status();
      EXPECT_EQ(fn->entry + bias, top.entry);
      EXPECT_EQ(fn->name, lines->back().function);
      EXPECT_GT(fn->end, top.pc - bias);
      EXPECT_GE(fn->sp_delta, 0);
      // Go functions have their frame allocated at every call site.
      if (absl::StartsWith(fn->name, "main.")) EXPECT_GT(fn->sp_delta, 0) << fn->name;
      if (lines->size() > 1) ++inlined_chains;
      i += lines->size();
    }
  }
  // The program's shape guarantees inlining and these functions in the stacks.
  EXPECT_GE(inlined_chains, 5);
  EXPECT_GT(frames_checked, 40);
  for (const char* fn :
       {"main.leaf", "main.inlineA", "main.inlineB", "main.(*counter).bump", "main.(*counter).deep",
        "main.viaClosure.func1", "main.capture", "runtime.Callers", "main.main", "runtime.main"}) {
    EXPECT_GT(seen[fn], 0) << fn;
  }
  // A generic instantiation is named as runtime/pprof names it: the symbol, with its shape from
  // Go 1.21 on (the compiler wrote inlined ones "[...]" before); printed (Go's tracebacks and
  // text profiles) with "[...]" from Go 1.20 on.
  auto generic = std::find_if(seen.begin(), seen.end(), [](const auto& kv) {
    return absl::StartsWith(kv.first, "main.sum[");
  });
  ASSERT_NE(generic, seen.end());
  EXPECT_EQ((*tab)->PrintName(generic->first), version == "1.19" ? generic->first : "main.sum[...]");

  // Trimmed binaries record import-path-relative file names; others absolute ones.
  bool trimmed = std::string(flavor.flags).find("trimpath") != std::string::npos;
  auto leaf = (*tab)->Symbolize(go.stacks[0][0].pc - bias);
  ASSERT_TRUE(leaf.ok());
  EXPECT_EQ(leaf->front().file[0] == '/', !trimmed) << leaf->front().file;
}

INSTANTIATE_TEST_SUITE_P(AllGo, GoFramesTest,
                         ::testing::Combine(::testing::ValuesIn(GoVersions()),
                                            ::testing::ValuesIn(kFlavors)),
                         [](const ::testing::TestParamInfo<GoFramesTest::ParamType>& p) {
                           std::string v = std::get<0>(p.param);
                           for (char& c : v) c = c == '.' ? '_' : c;
                           return "go" + v + "_" + std::get<1>(p.param).name;
                         });

// Shared binary for the non-parameterized tests: go_frames built with the newest Go.
class GoBinary : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string dir = MakeTempDir("go_pclntab");
    auto bin =
        BuildGo(GoVersions().back(), TestDataDir() + "/targets/go_frames", "", dir + "/prog");
    ASSERT_TRUE(bin.ok()) << bin.status();
    path_ = new std::string(*bin);
  }
  static std::string* path_;
};
std::string* GoBinary::path_ = nullptr;

// Every Go function symbol in .symtab is found by LookupFunc with its exact entry and name.
TEST_F(GoBinary, LookupFuncMatchesSymtab) {
  ASSERT_NE(path_, nullptr);
  auto elf = ElfFile::Open(*path_);
  ASSERT_TRUE(elf.ok());
  auto tab = GoPclntab::FromElf(**elf);
  ASSERT_TRUE(tab.ok()) << tab.status();
  int matched = 0;
  for (const ElfSymbol& sym : (*elf)->FunctionSymbols()) {
    if (sym.value < (*tab)->min_pc() || sym.value >= (*tab)->max_pc()) continue;
    auto fn = (*tab)->LookupFunc(sym.value);
    ASSERT_TRUE(fn.ok()) << sym.name;
    if (fn->entry != sym.value) continue;  // assembly labels inside functions
    // .symtab spells ABI0 assembly functions with a ".abi0" suffix; generic instantiations are
    // named alike, with their shape.
    std::string want = sym.name;
    if (absl::EndsWith(want, ".abi0")) want.resize(want.size() - 5);
    // The linker also writes the middle dot of compiler-generated names as '.' in .symtab.
    EXPECT_EQ(absl::StrReplaceAll(fn->name, {{"\xC2\xB7", "."}}), want);
    EXPECT_EQ(fn->sp_delta, 0) << sym.name;  // nothing pushed at the entry instruction
    ++matched;
  }
  EXPECT_GT(matched, 1000);
  EXPECT_GE(static_cast<size_t>(matched) + 50, (*tab)->num_funcs());
}

// FromBytes over the raw section gives the same physical frames as FromElf; tables without a
// section header are found by their magic.
TEST_F(GoBinary, FromBytesAndMagicScan) {
  ASSERT_NE(path_, nullptr);
  auto elf = ElfFile::Open(*path_);
  ASSERT_TRUE(elf.ok());
  const ElfSection* s = (*elf)->FindSection(".gopclntab");
  ASSERT_NE(s, nullptr);
  auto from_elf = GoPclntab::FromElf(**elf);
  ASSERT_TRUE(from_elf.ok());
  // Go 1.26+ leave the header's textStart zero: FromBytes is then told runtime.text.
  auto text = (*elf)->FindSymbol("runtime.text");
  ASSERT_TRUE(text.has_value());
  auto from_bytes = GoPclntab::FromBytes((*elf)->SectionData(*s), text->value);
  ASSERT_TRUE(from_bytes.ok()) << from_bytes.status();
  EXPECT_EQ((*from_bytes)->num_funcs(), (*from_elf)->num_funcs());
  EXPECT_EQ((*from_bytes)->min_pc(), (*from_elf)->min_pc());

  // Hide the section name: the table must be located by magic + header validation.
  std::string bytes((*elf)->data());
  size_t renamed = 0;
  for (size_t p = bytes.find(std::string(".gopclntab\0", 11)); p != std::string::npos;
       p = bytes.find(std::string(".gopclntab\0", 11), p + 1)) {
    bytes[p + 1] = 'x';
    ++renamed;
  }
  ASSERT_GE(renamed, 1u);
  auto hidden = ElfFile::FromBytes(bytes);
  ASSERT_TRUE(hidden.ok());
  ASSERT_EQ((*hidden)->FindSection(".gopclntab"), nullptr);
  auto scanned = GoPclntab::FromElf(**hidden);
  ASSERT_TRUE(scanned.ok()) << scanned.status();

  int compared = 0;
  for (uint64_t pc = (*from_elf)->min_pc(); pc < (*from_elf)->max_pc(); pc += 97) {
    auto a = (*from_elf)->Symbolize(pc);
    auto b = (*scanned)->Symbolize(pc);
    auto c = (*from_bytes)->Symbolize(pc);
    ASSERT_EQ(a.ok(), b.ok());
    ASSERT_EQ(a.ok(), c.ok());
    if (!a.ok()) continue;
    EXPECT_EQ(*a, *b);
    // Without gofunc FromBytes cannot expand inlines: it reports the physical function and the
    // innermost position.
    EXPECT_EQ(c->size(), 1u);
    EXPECT_EQ(c->back().function, a->back().function);
    EXPECT_EQ(c->front().file, a->front().file);
    EXPECT_EQ(c->front().line, a->front().line);
    ++compared;
  }
  EXPECT_GT(compared, 1000);
}

TEST_F(GoBinary, TruncatedAndCorruptTables) {
  ASSERT_NE(path_, nullptr);
  auto elf = ElfFile::Open(*path_);
  ASSERT_TRUE(elf.ok());
  const ElfSection* s = (*elf)->FindSection(".gopclntab");
  ASSERT_NE(s, nullptr);
  const std::string table((*elf)->SectionData(*s));

  for (size_t len : {size_t{0}, size_t{7}, size_t{40}, size_t{71}, size_t{72}, size_t{200}}) {
    EXPECT_FALSE(GoPclntab::FromBytes(table.substr(0, len), 0).ok()) << len;
  }
  std::string bad_magic = table;
  bad_magic[0] = 0x12;
  auto st = GoPclntab::FromBytes(bad_magic, 0);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  std::string bad_ptr = table;
  bad_ptr[7] = 4;
  EXPECT_FALSE(GoPclntab::FromBytes(bad_ptr, 0).ok());

  // Truncations past the function table parse, and lookups never read out of bounds.
  auto full = GoPclntab::FromBytes(table, 0);
  ASSERT_TRUE(full.ok());
  const uint64_t lo = (*full)->min_pc(), hi = (*full)->max_pc();
  for (size_t len : {table.size() / 2, table.size() - 1, table.size() * 9 / 10}) {
    auto t = GoPclntab::FromBytes(table.substr(0, len), 0);
    if (!t.ok()) continue;
    for (uint64_t pc = lo; pc < hi; pc += 1013) {
      (void)(*t)->Symbolize(pc);
      (void)(*t)->LookupFunc(pc);
    }
  }
  // Random byte corruption: errors or wrong answers are fine, crashes and hangs are not.
  std::srand(1234);
  for (int round = 0; round < 20; ++round) {
    std::string c = table;
    for (int k = 0; k < 200; ++k) c[std::rand() % c.size()] = static_cast<char>(std::rand());
    auto t = GoPclntab::FromBytes(c, 0);
    if (!t.ok()) continue;
    for (uint64_t pc = lo; pc < hi; pc += 4099) {
      (void)(*t)->Symbolize(pc);
      (void)(*t)->LookupFunc(pc);
    }
  }
  EXPECT_EQ((*full)->Symbolize(hi).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*full)->Symbolize(lo - 1).status().code(), absl::StatusCode::kNotFound);
}

TEST(GoPclntabTest, NonGoElfIsNotFound) {
  auto elf = ElfFile::Open("/bin/true");
  ASSERT_TRUE(elf.ok()) << elf.status();
  auto tab = GoPclntab::FromElf(**elf);
  EXPECT_EQ(tab.status().code(), absl::StatusCode::kNotFound) << tab.status();
}

// A large Go binary (the compiler) loads fast and symbolizes every function.
// Load and lookup speed of a large binary are measured in bench/ (BENCHMARKS.md), not here.
TEST(GoPclntabTest, LargeBinaryResolvesEveryPc) {
  const std::string path = ::pprof_sidecar::testing::GoMatrixDir() + "/" + GoVersions().back() +
                           "/pkg/tool/linux_amd64/compile";
  auto elf = ElfFile::Open(path);
  ASSERT_TRUE(elf.ok()) << elf.status();
  auto tab = GoPclntab::FromElf(**elf);
  ASSERT_TRUE(tab.ok()) << tab.status();
  EXPECT_GT((*tab)->num_funcs(), 10000u);
  auto first = (*tab)->LookupFunc((*tab)->min_pc());
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->entry, (*tab)->min_pc());
  // A spread of PCs: every one inside the table resolves to a named function that contains it.
  const uint64_t step = ((*tab)->max_pc() - (*tab)->min_pc()) / 20000 + 1;
  for (uint64_t pc = (*tab)->min_pc(); pc < (*tab)->max_pc(); pc += step) {
    auto l = (*tab)->Symbolize(pc);
    ASSERT_TRUE(l.ok()) << std::hex << pc << " " << l.status();
    ASSERT_FALSE(l->front().function.empty());
    auto f = (*tab)->LookupFunc(pc);
    ASSERT_TRUE(f.ok());
    EXPECT_LE(f->entry, pc);
    EXPECT_LT(pc, f->end);
    EXPECT_EQ(f->name, l->back().function);
  }
}

}  // namespace
}  // namespace pprof_sidecar
