// Go runtime symbol table (.gopclntab) reader for Go 1.18+ layouts (magic 0xfffffff0 for
// 1.18/1.19, 0xfffffff1 for 1.20 through 1.27 at least). Works on stripped (-s -w), PIE and
// -trimpath binaries: it never needs .symtab. All reads are bounds-checked; corrupt tables give
// errors, never crashes.
//
// What moved between releases and how it is found without knowing the release:
//   - pcHeader.textStart: zero from Go 1.26 (the field is unused); the text base then comes from
//     moduledata.text, accepted only if moduledata's minpc/maxpc agree with the function table.
//   - moduledata.gofunc (base of the inline trees): word 38 (1.19), 40 (1.20-1.26), 43 (1.27);
//     taken from the word whose inline-tree records are well-formed for a sample of functions.
//   - FuncIDWrapper: the last funcID of the enum, whose length changed (1.21, 1.22, 1.25);
//     runtime.systemstack_switch's funcID + 1, cross-checked with the largest funcID in use.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_PCLNTAB_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_PCLNTAB_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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
  // As Symbolize, and `level_pcs` (if not null) gets, per returned line, the PC whose pcln value
  // that line is: `pc` for the innermost, the inline mark's address (the inlinedCall's parentPc)
  // for each caller. Go's tracebacks record each level as that PC + 1.
  virtual absl::StatusOr<SourceLines> SymbolizeLevels(uint64_t pc,
                                                      std::vector<uint64_t>* level_pcs) const = 0;

  // Entry address and name of the function containing pc (no inline expansion).
  struct FuncInfo {
    uint64_t entry = 0;
    uint64_t end = 0;
    std::string name;
    int32_t sp_delta = 0;  // SP delta (pcsp table) at pc; for frame-pointer-less unwinding
    uint8_t func_id = 0;   // abi.FuncID (release-specific numbering)
    uint8_t flag = 0;      // abi.FuncFlag: 1 TOPFRAME, 2 SPWRITE, 4 ASM
  };
  virtual absl::StatusOr<FuncInfo> LookupFunc(uint64_t pc) const = 0;
  // Symbolize and LookupFunc name functions as runtime/pprof writes them into profiles: the
  // symbol itself, a generic instantiation with its type arguments (`F[go.shape.int]`). This is
  // `name` as Go's tracebacks and text profiles print it (runtime.funcNameForPrint): the type
  // arguments written "[...]" in binaries of Go 1.20 on.
  virtual std::string PrintName(absl::string_view name) const = 0;

  // The bytes of funcdata `index` (FUNCDATA_*) of the function containing pc, to the end of the
  // funcdata area (the caller knows the record's length); empty if absent or unknown.
  virtual absl::string_view FuncData(uint64_t pc, int index) const = 0;
  // pcdata table `table` (PCDATA_*) of the function containing pc, at pc; -1 if absent.
  virtual int32_t PcDataAt(uint64_t pc, int table) const = 0;

  // The runtime's moduledata (runtime.firstmoduledata) as far as it was found and validated:
  // link-time addresses of the binary's text and data sections as the Go runtime sees them.
  struct ModuleData {
    uint64_t addr = 0;
    uint64_t text = 0, etext = 0;
    uint64_t noptrdata = 0, enoptrdata = 0, data = 0, edata = 0;
    uint64_t bss = 0, ebss = 0, noptrbss = 0, enoptrbss = 0;
    uint64_t gofunc = 0;  // 0: not found (no inline expansion)
  };
  virtual const std::optional<ModuleData>& module_data() const = 0;
  // funcID of Go's wrapper functions in this binary (see the file comment), -1 if unknown.
  virtual int wrapper_func_id() const = 0;

  // Go version family detected from the header ("1.18-1.19" or "1.20+").
  virtual std::string version_family() const = 0;
  virtual size_t num_funcs() const = 0;
  // [min_pc, max_pc) covered by the function table (link-time addresses).
  virtual uint64_t min_pc() const = 0;
  virtual uint64_t max_pc() const = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_PCLNTAB_H_
