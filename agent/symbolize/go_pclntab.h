// Go runtime symbol table (.gopclntab) reader for Go 1.18+ layouts (magic 0xfffffff0 for
// 1.18/1.19, 0xfffffff1 for 1.20+), i.e. every Go Debian 12 and bookworm-backports ship
// (1.19, 1.21, 1.22, 1.23). Works on stripped (-s -w), PIE and -trimpath binaries: it never
// needs .symtab. All reads are bounds-checked; corrupt tables give errors, never crashes.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_PCLNTAB_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_PCLNTAB_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/source_line.h"

namespace pprof_sidecar {

class GoPclntab {
 public:
  // Finds the pclntab in `elf` (the .gopclntab section, or for binaries without that section
  // header, the table located through its magic and validated header) and parses its header.
  // Returns NotFound if `elf` is not a Go binary. The ElfFile must outlive the GoPclntab.
  static absl::StatusOr<std::unique_ptr<GoPclntab>> FromElf(const ElfFile& elf);
  // Parses raw table bytes. `text_start` is the link-time address of runtime.text, used when the
  // header's own value is zero (PIE binaries whose header is relocated at load time).
  static absl::StatusOr<std::unique_ptr<GoPclntab>> FromBytes(absl::string_view table,
                                                              uint64_t text_start);

  virtual ~GoPclntab() = default;

  // Symbolizes a link-time virtual address (a PC exactly; callers pass return address - 1 for
  // caller frames). Inlined frames are expanded innermost first, the physical function last,
  // each with function name, file and line as runtime.CallersFrames reports them.
  // NotFound if the address is outside every Go function.
  virtual absl::StatusOr<SourceLines> Symbolize(uint64_t pc) const = 0;

  // Entry address and name of the function containing pc (no inline expansion).
  struct FuncInfo {
    uint64_t entry = 0;
    uint64_t end = 0;
    std::string name;
    int32_t sp_delta = 0;  // SP delta (pcsp table) at pc; for frame-pointer-less unwinding
  };
  virtual absl::StatusOr<FuncInfo> LookupFunc(uint64_t pc) const = 0;

  // Go version family detected from the header ("1.18-1.19" or "1.20+").
  virtual std::string version_family() const = 0;
  virtual size_t num_funcs() const = 0;
  // [min_pc, max_pc) covered by the function table (link-time addresses).
  virtual uint64_t min_pc() const = 0;
  virtual uint64_t max_pc() const = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_PCLNTAB_H_
