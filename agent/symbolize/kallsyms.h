// Kernel symbolization from /proc/kallsyms.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_KALLSYMS_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_KALLSYMS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar {

class Kallsyms {
 public:
  // Parses kallsyms text ("addr type name [module]" lines). Errors if no symbol has a non-zero
  // address (kptr_restrict hides them) so the caller can report it.
  static absl::StatusOr<std::unique_ptr<Kallsyms>> Parse(absl::string_view text);
  static absl::StatusOr<std::unique_ptr<Kallsyms>> Load(const std::string& path = "/proc/kallsyms");

  struct Symbol {
    uint64_t addr = 0;
    std::string name;
    std::string module;  // "" for vmlinux
  };
  // Symbol containing addr (the last text symbol <= addr), or nullopt.
  std::optional<Symbol> Lookup(uint64_t addr) const;
  size_t size() const { return syms_.size(); }

 private:
  class Builder;
  // ~110 k text symbols on a distribution kernel: 16 bytes each plus their names in one blob
  // (~4 MB), instead of two std::strings per symbol (~72 bytes each plus long names' heap
  // blocks, ~10 MB, most of the agent's resident memory).
  struct Entry {
    uint64_t addr;
    uint32_t name_off;  // into names_
    uint16_t name_len;
    uint16_t module;  // index into modules_; 0: vmlinux ("")
  };
  std::vector<Entry> syms_;  // sorted by addr
  std::string names_;
  std::vector<std::string> modules_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_KALLSYMS_H_
