// libFuzzer target: ELF parsing and symbolization of arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/elf_symbolizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using pprof_sidecar::ElfFile;
  auto f = ElfFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size));
  if (!f.ok()) return 0;
  const ElfFile& elf = **f;
  size_t total = 0;
  for (const auto& s : elf.sections()) {
    absl::string_view d = elf.SectionData(s);
    if (!d.empty()) total += static_cast<unsigned char>(d.back());  // touch the last byte
    (void)elf.FindSection(s.name);
  }
  (void)elf.BuildId();
  for (const auto& seg : elf.load_segments()) {
    (void)elf.FileOffsetToVaddr(seg.offset);
    (void)elf.VaddrToFileOffset(seg.vaddr);
    (void)elf.VaddrToFileOffset(seg.vaddr + seg.filesz - 1);
  }
  (void)elf.FindSymbol("main");
  pprof_sidecar::ElfSymbolizer sym(elf);
  for (const auto& s : elf.FunctionSymbols()) {
    auto l = sym.Lookup(s.value);
    if (l.has_value()) total += l->function.size();
  }
  return total == 0xdeadbeef ? 1 : 0;
}
