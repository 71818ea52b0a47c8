// Native (C/C++) symbolization from DWARF debug info via elfutils libdw: function names, file:line
// and inlined call chains, the way `addr2line -f -i -C` reports them.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_DWARF_SYMBOLIZER_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_DWARF_SYMBOLIZER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/symbolize/source_line.h"

namespace pprof_sidecar {

class DwarfSymbolizer {
 public:
  // Opens the DWARF of the ELF file at `path` (embedded .debug_info/.debug_line, possibly
  // SHF_COMPRESSED). If the file has none, looks for a separate debug file, in order:
  //   /usr/lib/debug/.build-id/xx/rest.debug   (by the file's GNU build id)
  //   <dir>/<debuglink>, <dir>/.debug/<debuglink>, /usr/lib/debug/<dir>/<debuglink>
  // inside `debug_root`, where <dir> is the directory of `target_path` (the binary's path as the
  // target sees it), else of `path` with the debug_root prefix stripped. A separate file is only
  // accepted if its build id (when both have one) matches. debug_root is e.g. "/proc/PID/root"
  // so the target's own debug files are used; "" means the agent's own "/". A dwz supplementary
  // file (.gnu_debugaltlink) is looked up by build id inside debug_root too.
  // The target controls what is under its root: separate files are opened as target files
  // (target_file.h): symlinks resolve inside debug_root, FIFOs and devices are never opened, and
  // files above kMaxTargetFileBytes are refused (named in the NotFound message).
  // Returns NotFound when no DWARF is available; errors name the path. Opening is cheap: indexes
  // are built lazily on the first lookups.
  static absl::StatusOr<std::unique_ptr<DwarfSymbolizer>> Open(const std::string& path,
                                                               const std::string& debug_root = "",
                                                               const std::string& target_path = "");

  ~DwarfSymbolizer();
  DwarfSymbolizer(const DwarfSymbolizer&) = delete;
  DwarfSymbolizer& operator=(const DwarfSymbolizer&) = delete;

  // Source lines for a link-time virtual address (exact PC; callers pass return address - 1 for
  // caller frames): inlined subroutines expanded innermost first, the physical function last.
  // Each entry has:
  //   function     demangled DW_AT_linkage_name (full __cxa_demangle output, e.g.
  //                "ns::Class::method(long)"), else DW_AT_name (C functions: just the name);
  //   system_name  the linkage name if any, else the same as function;
  //                the physical function (last entry) without a DW_AT_linkage_name (all of C,
  //                some C++ DIEs) is named, like addr2line does, after the ELF function symbol
  //                covering vaddr (.symtab, else .dynsym), e.g. "Foo::Bar() [clone .cold]";
  //   file, line   innermost: the line-table row for the pc; each outer entry: the call site
  //                (DW_AT_call_file/DW_AT_call_line) of the inlined subroutine just inside it;
  //   start_line   DW_AT_decl_line of the (abstract) function, 0 if unknown.
  // Unknown parts are left empty/0: a pc covered by a CU but without a line row still yields the
  // function names; a pc with a line row but no DW_TAG_subprogram (e.g. assembly) yields one entry
  // with an empty function (callers fill it from the symbol table). NotFound if the DWARF has
  // neither for vaddr (malformed DWARF degrades to NotFound or partial results). Thread-safe;
  // results are cached (bounded), a warm lookup costs well under a microsecond.
  absl::StatusOr<SourceLines> Symbolize(uint64_t vaddr) const;

  // Frees the DWARF handles and lookup indexes (for a debug file with compressed sections, their
  // decompressed copies: ~10 MB for glibc's), keeping the files open and the results found so
  // far; a later lookup of a new address reopens them from the same files. For callers that
  // symbolize in bursts (one profile at a time) and must not hold the indexes in between.
  void Trim();

  // Path of the file the DWARF was actually read from (`path` itself or the separate debug file).
  const std::string& debug_file() const { return debug_file_; }

 private:
  struct State;  // libdw handles, lazy indexes and the result cache; guarded by mu_
  DwarfSymbolizer(std::string path, std::string debug_file, std::unique_ptr<State> state);

  std::string path_;
  std::string debug_file_;
  mutable absl::Mutex mu_;
  std::unique_ptr<State> state_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_DWARF_SYMBOLIZER_H_
