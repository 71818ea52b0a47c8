// DWARF call-frame information (CFI) for x86-64: a reader of .eh_frame (located through
// .eh_frame_hdr's binary search table when present, else through an FDE index built once) and
// .debug_frame, and an evaluator of the CFA programs down to the unwind row at one pc.
//
// Only what x86-64 unwinding from (rip, rsp, rbp) needs is kept per row: the CFA rule, and the
// rules of the return address (DWARF register 16) and rbp (6). Every read of the section bytes is
// bounds-checked: a corrupt or hostile binary yields an error for the pc, never a crash.
#ifndef PPROF_SIDECAR_AGENT_UNWIND_CFI_H_
#define PPROF_SIDECAR_AGENT_UNWIND_CFI_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/elf_file.h"

namespace pprof_sidecar {

// x86-64 DWARF register numbers used by the unwinder.
inline constexpr int kDwarfRbp = 6;
inline constexpr int kDwarfRsp = 7;
inline constexpr int kDwarfRa = 16;

// How to recover one register of the caller.
struct CfiRegRule {
  enum Kind : uint8_t {
    kSameValue,      // unchanged (also "unspecified": callee-saved by convention)
    kUndefined,      // no value; for the return address: the outermost frame
    kOffset,         // saved at CFA + offset
    kValOffset,      // the value is CFA + offset
    kRegister,       // the value is in register `reg`
    kExpression,     // saved at the address computed by `expr` (CFA pushed first)
    kValExpression,  // the value is computed by `expr` (CFA pushed first)
  };
  Kind kind = kSameValue;
  uint16_t reg = 0;
  int64_t offset = 0;
  absl::string_view expr;  // DWARF expression bytes (points into the binary's mapped file)
};

// The unwind row covering one pc.
struct CfiRow {
  enum CfaKind : uint8_t { kCfaRegOffset, kCfaExpression };
  CfaKind cfa_kind = kCfaRegOffset;
  uint16_t cfa_reg = kDwarfRsp;
  int64_t cfa_offset = 0;
  absl::string_view cfa_expr;
  CfiRegRule ra, rbp;
  bool signal_frame = false;            // CIE augmentation 'S' (e.g. __restore_rt)
  uint64_t fde_begin = 0, fde_end = 0;  // link-time pc range of the FDE
};

// Inputs of a CFI table: section bytes and their link-time addresses (pc-relative pointers are
// relative to them). Any of them may be empty.
struct CfiSections {
  absl::string_view eh_frame;
  uint64_t eh_frame_vaddr = 0;
  absl::string_view eh_frame_hdr;
  uint64_t eh_frame_hdr_vaddr = 0;
  absl::string_view debug_frame;
};

class CfiTable {
 public:
  // Reads the sections of `elf`. The ElfFile must outlive the table. NotFound if it has neither
  // .eh_frame nor .debug_frame. Go binaries pass use_debug_frame=false: their .debug_frame
  // describes Go functions, which pclntab covers better.
  static absl::StatusOr<std::unique_ptr<CfiTable>> FromElf(const ElfFile& elf,
                                                           bool use_debug_frame = true);
  // The bytes must outlive the table.
  static absl::StatusOr<std::unique_ptr<CfiTable>> FromSections(const CfiSections& sections);

  // The row at link-time address `pc`. NotFound if no FDE covers pc; DataLoss if the CFI is
  // malformed. Thread-safe (const, no caching).
  absl::StatusOr<CfiRow> Find(uint64_t pc) const;

  // Number of FDEs indexed (from .eh_frame_hdr or by scanning).
  size_t num_fdes() const { return num_fdes_; }
  bool uses_eh_frame_hdr() const { return hdr_table_.data() != nullptr; }

 private:
  CfiTable() = default;
  struct IndexEntry {
    uint64_t begin, end;
    uint32_t offset;  // of the FDE in its section
    bool debug_frame;
  };
  absl::Status BuildIndex(bool debug_frame);
  absl::StatusOr<CfiRow> EvalFde(bool debug_frame, uint64_t fde_offset, uint64_t pc) const;

  CfiSections s_;
  absl::string_view hdr_table_;  // .eh_frame_hdr sorted (initial loc, fde) pairs, datarel sdata4
  size_t hdr_count_ = 0;
  std::vector<IndexEntry> index_;  // sorted by begin; .debug_frame (and .eh_frame without hdr)
  size_t num_fdes_ = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_UNWIND_CFI_H_
