#include "agent/symbolize/elf_file.h"

#include <elf.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/symbolize/elf_symbolizer.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::BuildNative;
using ::pprof_sidecar::testing::GoVersions;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::RunCommand;
using ::pprof_sidecar::testing::TestDataDir;

struct Variant {
  friend void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }
  std::string name;
  std::string src;
  std::string flags;
  uint16_t want_type;
};

const std::vector<Variant>& Variants() {
  static const auto* v = new std::vector<Variant>{
      {"c_pie", "prog.c", "-O1 -fPIE -pie", ET_DYN},
      {"c_nopie", "prog.c", "-O1 -fno-pie -no-pie", ET_EXEC},
      {"c_stripped", "prog.c", "-O1 -fPIE -pie -rdynamic -s", ET_DYN},
      {"cc_pie", "prog.cc", "-O1 -fPIE -pie", ET_DYN},
      {"cc_nopie", "prog.cc", "-O1 -fno-pie -no-pie", ET_EXEC},
  };
  return *v;
}

// Builds (once per process) the variant's binary and returns its path.
std::string Binary(const Variant& v) {
  static auto* built = new std::map<std::string, std::string>();
  static const std::string dir = MakeTempDir("elf_file_test");
  auto it = built->find(v.name);
  if (it != built->end()) return it->second;
  auto out =
      BuildNative({TestDataDir() + "/targets/native_syms/" + v.src}, v.flags, dir + "/" + v.name);
  EXPECT_TRUE(out.ok()) << out.status();
  (*built)[v.name] = out.ok() ? *out : "";
  return (*built)[v.name];
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t Hex(absl::string_view s) {
  absl::ConsumePrefix(&s, "0x");
  uint64_t v = 0;
  EXPECT_TRUE(absl::SimpleHexAtoi(s, &v)) << s;
  return v;
}

class ElfFileTest : public ::testing::TestWithParam<Variant> {};

TEST_P(ElfFileTest, TypeAndLoadSegmentsMatchReadelf) {
  std::string bin = Binary(GetParam());
  ASSERT_FALSE(bin.empty());
  auto elf = ElfFile::Open(bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_EQ((*elf)->type(), GetParam().want_type);

  auto r = RunCommand("readelf -lW '" + bin + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<ElfSegment> want;
  for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 7 || f[0] != "LOAD") continue;
    // LOAD Offset VirtAddr PhysAddr FileSiz MemSiz Flg... Align
    ElfSegment s;
    s.offset = Hex(f[1]);
    s.vaddr = Hex(f[2]);
    s.filesz = Hex(f[4]);
    s.memsz = Hex(f[5]);
    want.push_back(s);
  }
  ASSERT_GE(want.size(), 2u);
  const auto& got = (*elf)->load_segments();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("segment ", i));
    EXPECT_EQ(got[i].offset, want[i].offset);
    EXPECT_EQ(got[i].vaddr, want[i].vaddr);
    EXPECT_EQ(got[i].filesz, want[i].filesz);
    EXPECT_EQ(got[i].memsz, want[i].memsz);
    if (want[i].filesz == 0) continue;
    EXPECT_EQ((*elf)->FileOffsetToVaddr(want[i].offset), want[i].vaddr);
    EXPECT_EQ((*elf)->FileOffsetToVaddr(want[i].offset + want[i].filesz - 1),
              want[i].vaddr + want[i].filesz - 1);
    EXPECT_EQ((*elf)->VaddrToFileOffset(want[i].vaddr + want[i].filesz / 2),
              want[i].offset + want[i].filesz / 2);
  }
  // Past the end of the file nothing maps.
  EXPECT_FALSE((*elf)->FileOffsetToVaddr((*elf)->data().size() + 4096).has_value());
}

TEST_P(ElfFileTest, BuildIdMatchesReadelf) {
  std::string bin = Binary(GetParam());
  ASSERT_FALSE(bin.empty());
  auto elf = ElfFile::Open(bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  auto r = RunCommand("readelf -n '" + bin + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  size_t pos = r.output.find("Build ID: ");
  ASSERT_NE(pos, std::string::npos) << r.output;
  std::string want(absl::StripAsciiWhitespace(
      absl::string_view(r.output).substr(pos + 10, r.output.find('\n', pos) - pos - 10)));
  EXPECT_EQ((*elf)->BuildId(), want);
  EXPECT_EQ(want.size(), 40u);
}

TEST_P(ElfFileTest, SectionsMatchReadelf) {
  std::string bin = Binary(GetParam());
  ASSERT_FALSE(bin.empty());
  auto elf = ElfFile::Open(bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  // readelf -SW: "  [16] .text  PROGBITS  0000000000001050 001050 000171 00  AX  0   0 16"
  auto r = RunCommand("readelf -SW '" + bin + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int checked = 0;
  for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
    size_t rb = line.find(']');
    if (line.find('[') == absl::string_view::npos || rb == absl::string_view::npos) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line.substr(rb + 1), ' ', absl::SkipEmpty());
    if (f.size() < 5 || !absl::StartsWith(f[0], ".")) continue;
    const ElfSection* s = (*elf)->FindSection(f[0]);
    ASSERT_NE(s, nullptr) << f[0];
    EXPECT_EQ(s->addr, Hex(f[2])) << f[0];
    EXPECT_EQ(s->offset, Hex(f[3])) << f[0];
    EXPECT_EQ(s->size, Hex(f[4])) << f[0];
    if (s->type != SHT_NOBITS) EXPECT_EQ((*elf)->SectionData(*s).size(), s->size) << f[0];
    ++checked;
  }
  EXPECT_GE(checked, 10);
  EXPECT_EQ((*elf)->FindSection(".no_such_section"), nullptr);
  // .text bytes are the file's bytes at the section offset.
  const ElfSection* text = (*elf)->FindSection(".text");
  ASSERT_NE(text, nullptr);
  std::string file = ReadWholeFile(bin);
  EXPECT_EQ((*elf)->SectionData(*text), absl::string_view(file).substr(text->offset, text->size));
  // .bss occupies no file bytes.
  const ElfSection* bss = (*elf)->FindSection(".bss");
  ASSERT_NE(bss, nullptr);
  EXPECT_TRUE((*elf)->SectionData(*bss).empty());
}

TEST_P(ElfFileTest, FindSymbolMatchesNm) {
  const Variant& v = GetParam();
  std::string bin = Binary(v);
  ASSERT_FALSE(bin.empty());
  auto elf = ElfFile::Open(bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  bool stripped = v.name.find("stripped") != std::string::npos;
  auto r = RunCommand(absl::StrCat("nm ", stripped ? "-D " : "", "--defined-only '", bin, "'"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, uint64_t> nm;
  for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() == 3) nm[std::string(f[2])] = Hex(f[0]);
  }
  for (const char* name : {"main", "global_counter"}) {
    if (v.src == "prog.cc" && std::string(name) == "global_counter") continue;
    ASSERT_TRUE(nm.count(name)) << name << "\n" << r.output;
    auto sym = (*elf)->FindSymbol(name);
    ASSERT_TRUE(sym.has_value()) << name;
    EXPECT_EQ(sym->value, nm[name]) << name;
  }
  EXPECT_FALSE((*elf)->FindSymbol("no_such_symbol_anywhere").has_value());
  // FunctionSymbols is sorted and deduplicated by value.
  const auto& fs = (*elf)->FunctionSymbols();
  ASSERT_FALSE(fs.empty());
  for (size_t i = 1; i < fs.size(); ++i) EXPECT_LT(fs[i - 1].value, fs[i].value);
}

INSTANTIATE_TEST_SUITE_P(Binaries, ElfFileTest, ::testing::ValuesIn(Variants()),
                         [](const auto& info) { return info.param.name; });

TEST(ElfFileGoTest, GoBuildIdMatchesGoTool) {
  auto versions = GoVersions();
  ASSERT_FALSE(versions.empty());
  const std::string& ver = versions.front();
  std::string dir = MakeTempDir("elf_go");
  auto bin = BuildGo(ver, TestDataDir() + "/targets/native_syms/gobuildid", "", dir + "/gobin");
  ASSERT_TRUE(bin.ok()) << bin.status();
  auto go = ::pprof_sidecar::testing::GoTool(ver);
  ASSERT_TRUE(go.ok()) << go.status();
  auto r = RunCommand(absl::StrCat(*go, " tool buildid '", *bin, "'"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string want(absl::StripAsciiWhitespace(r.output));
  ASSERT_FALSE(want.empty());
  auto elf = ElfFile::Open(*bin);
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_EQ((*elf)->BuildId(), want);
  // Go's pclntab section is reachable for the Go symbolizer.
  const ElfSection* pcln = (*elf)->FindSection(".gopclntab");
  ASSERT_NE(pcln, nullptr);
  EXPECT_FALSE((*elf)->SectionData(*pcln).empty());
}

TEST(ElfFileErrorTest, OpenErrorsNameThePath) {
  auto missing = ElfFile::Open("/nonexistent/dir/file");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/file"), absl::string_view::npos);
  auto dir = ElfFile::Open("/tmp");
  EXPECT_FALSE(dir.ok());
  auto notelf = ElfFile::Open("/proc/self/maps");  // not a regular file
  EXPECT_FALSE(notelf.ok());
  std::string tmp = MakeTempDir("elf_err") + "/text";
  std::ofstream(tmp) << "this is not an ELF file at all, but it is long enough for a header....";
  auto text = ElfFile::Open(tmp);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find(tmp), absl::string_view::npos);
  EXPECT_FALSE(ElfFile::FromBytes("").ok());
  EXPECT_FALSE(ElfFile::FromBytes("\x7f"
                                  "ELF")
                   .ok());
}

// Exercises every accessor; must not crash whatever the input.
void Exercise(const ElfFile& f) {
  for (const auto& s : f.sections()) (void)f.SectionData(s);
  (void)f.BuildId();
  for (const auto& seg : f.load_segments()) {
    (void)f.FileOffsetToVaddr(seg.offset);
    (void)f.VaddrToFileOffset(seg.vaddr + seg.filesz);
  }
  (void)f.FindSymbol("main");
  ElfSymbolizer sym(f);
  for (const auto& s : f.FunctionSymbols()) (void)sym.Lookup(s.value + 1);
}

TEST(ElfFileErrorTest, TruncatedAndCorruptedImagesNeverCrash) {
  std::string bin = Binary(Variants()[0]);
  ASSERT_FALSE(bin.empty());
  std::string file = ReadWholeFile(bin);
  ASSERT_GT(file.size(), sizeof(Elf64_Ehdr));
  // The intact image parses from bytes with the same result as from the file.
  auto whole = ElfFile::FromBytes(file);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto opened = ElfFile::Open(bin);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ((*whole)->BuildId(), (*opened)->BuildId());
  EXPECT_EQ((*whole)->FunctionSymbols().size(), (*opened)->FunctionSymbols().size());

  // Every truncation point (at coarse steps) either fails cleanly or yields a usable object.
  for (size_t n = 0; n < file.size(); n += (n < 256 ? 1 : 97)) {
    auto f = ElfFile::FromBytes(file.substr(0, n));
    if (n < sizeof(Elf64_Ehdr)) EXPECT_FALSE(f.ok()) << n;
    if (f.ok()) Exercise(**f);
  }
  // A section header table pointing past the end is an error.
  {
    std::string bad = file;
    Elf64_Ehdr eh;
    memcpy(&eh, bad.data(), sizeof(eh));
    eh.e_shoff = bad.size() - 8;
    memcpy(&bad[0], &eh, sizeof(eh));
    EXPECT_FALSE(ElfFile::FromBytes(bad).ok());
    eh.e_shoff = ~0ull - 10;
    memcpy(&bad[0], &eh, sizeof(eh));
    EXPECT_FALSE(ElfFile::FromBytes(bad).ok());
  }
  // Random byte corruption in the headers and tables.
  std::mt19937_64 rng(12345);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bad = file;
    int flips = 1 + rng() % 16;
    for (int i = 0; i < flips; ++i) {
      size_t pos = iter % 2 ? rng() % 64 : rng() % bad.size();
      bad[pos] = static_cast<char>(rng());
    }
    auto f = ElfFile::FromBytes(std::move(bad));
    if (f.ok()) Exercise(**f);
  }
}

}  // namespace
}  // namespace pprof_sidecar
