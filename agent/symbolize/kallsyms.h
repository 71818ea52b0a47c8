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
  std::vector<Symbol> syms_;  // sorted by addr
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_KALLSYMS_H_
