// libFuzzer target: arbitrary bytes as an ELF file with (possibly malformed) DWARF. Opens it with
// DwarfSymbolizer and symbolizes addresses spread over its executable sections.
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/symbolize/dwarf_symbolizer.h"

namespace {

// Up to ~256 addresses inside SHF_EXECINSTR sections (plus a few outside any).
std::vector<uint64_t> ProbeAddresses(int fd) {
  std::vector<uint64_t> out = {0, 1, 0x1000, UINT64_MAX};
  if (elf_version(EV_CURRENT) == EV_NONE) return out;
  Elf* elf = elf_begin(fd, ELF_C_READ, nullptr);
  if (elf == nullptr) return out;
  Elf_Scn* scn = nullptr;
  int sections = 0;
  while ((scn = elf_nextscn(elf, scn)) != nullptr && ++sections < 64) {
    GElf_Shdr shdr;
    if (gelf_getshdr(scn, &shdr) == nullptr || !(shdr.sh_flags & SHF_EXECINSTR)) continue;
    uint64_t step = shdr.sh_size / 64 + 1;
    for (uint64_t off = 0; off < shdr.sh_size && out.size() < 256; off += step) {
      out.push_back(shdr.sh_addr + off);
    }
  }
  elf_end(elf);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_create("dwarf_fuzz", MFD_CLOEXEC);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  if (done == size) {
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    auto sym = pprof_sidecar::DwarfSymbolizer::Open(path, "/nonexistent-debug-root");
    if (sym.ok()) {
      for (uint64_t a : ProbeAddresses(fd)) {
        auto lines = (*sym)->Symbolize(a);
        if (lines.ok()) {
          for (const auto& l : *lines) {
            if (l.function.size() + l.file.size() > (1u << 30)) __builtin_trap();
          }
        }
        (void)(*sym)->Symbolize(a + 1);
      }
    }
  }
  close(fd);
  return 0;
}
