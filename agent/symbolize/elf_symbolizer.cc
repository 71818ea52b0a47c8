#include "agent/symbolize/elf_symbolizer.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>

namespace pprof_sidecar {

std::string Demangle(const std::string& name) {
  if (name.size() < 2 || name[0] != '_' || name[1] != 'Z') return name;
  int status = 0;
  char* out = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  if (out == nullptr) return name;
  std::string result = status == 0 ? std::string(out) : name;
  free(out);
  return result;
}

ElfSymbolizer::ElfSymbolizer(const ElfFile& elf) : syms_(elf.FunctionSymbols()) {
  // Give each size-0 symbol an explicit extent: up to the next symbol, but not past the end of
  // the PT_LOAD segment holding it (so it does not swallow unrelated later code or data).
  for (size_t i = 0; i < syms_.size(); ++i) {
    ElfSymbol& s = syms_[i];
    if (s.size != 0) continue;
    uint64_t end = s.value + 1;
    for (const auto& seg : elf.load_segments()) {
      if (s.value >= seg.vaddr && s.value - seg.vaddr < seg.memsz) {
        end = seg.vaddr + seg.memsz;
        break;
      }
    }
    if (i + 1 < syms_.size()) end = std::min(end, syms_[i + 1].value);
    if (end > s.value) s.size = end - s.value;
  }
}

std::optional<SourceLine> ElfSymbolizer::Lookup(uint64_t vaddr) const {
  auto it = std::upper_bound(syms_.begin(), syms_.end(), vaddr,
                             [](uint64_t v, const ElfSymbol& s) { return v < s.value; });
  if (it == syms_.begin()) return std::nullopt;
  const ElfSymbol& s = *std::prev(it);
  if (vaddr - s.value >= s.size) return std::nullopt;
  SourceLine line;
  line.system_name = s.name;
  line.function = Demangle(s.name);
  return line;
}

}  // namespace pprof_sidecar
