// Native symbolization from ELF symbol tables, with C++ demangling.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_ELF_SYMBOLIZER_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_ELF_SYMBOLIZER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/source_line.h"

namespace pprof_sidecar {

// Demangles an Itanium C++ ABI name; returns the input unchanged when it is not mangled.
std::string Demangle(const std::string& name);

class ElfSymbolizer {
 public:
  explicit ElfSymbolizer(const ElfFile& elf);  // copies what it needs; elf may be freed after
  // Function containing the link-time address vaddr: a single SourceLine with function
  // (demangled), system_name (raw) and no file/line. nullopt if no symbol covers it (a symbol
  // of size 0 covers up to the next symbol).
  std::optional<SourceLine> Lookup(uint64_t vaddr) const;
  size_t size() const { return syms_.size(); }

 private:
  std::vector<ElfSymbol> syms_;  // sorted by value
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_ELF_SYMBOLIZER_H_
