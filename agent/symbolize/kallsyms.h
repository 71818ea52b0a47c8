// Kernel symbolization from /proc/kallsyms.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_KALLSYMS_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_KALLSYMS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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
  // Symbol containing addr (the last text symbol <= addr), or nullopt. Thread-safe.
  std::optional<Symbol> Lookup(uint64_t addr) const;
  size_t size() const { return addr_low_.size(); }
  // Bytes held (the tables below), for tests and benchmarks.
  size_t MemoryBytes() const;

 private:
  class Builder;
  // ~120 k text symbols on a distribution kernel, ~3 MB of names. Kept compact (~1.2 MB instead
  // of ~5 MB): addresses as 32-bit offsets from a base (a new base wherever the gap to the
  // previous one reaches 4 GiB), names in blocks of kNamesPerBlock consecutive symbols,
  // NUL-separated and deflated (a lookup inflates one ~1.5 KB block), modules as runs.
  static constexpr size_t kNamesPerBlock = 64;
  uint64_t AddrAt(size_t i) const;
  std::vector<uint32_t> addr_low_;                        // sorted by full address
  std::vector<std::pair<size_t, uint64_t>> bases_;        // (first index, base), by index
  std::vector<std::pair<size_t, uint16_t>> module_runs_;  // (first index, module), by index
  std::vector<uint32_t> block_offset_;  // of each deflated block in blocks_, plus the end
  std::vector<uint32_t> block_size_;    // inflated size of each block
  std::string blocks_;
  std::vector<std::string> modules_;  // [0] = "" (vmlinux)
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_KALLSYMS_H_
