// Where a Go binary keeps its runtime's heap profile: runtime.mbuckets, runtime.mProfCycle and
// runtime.MemProfileRate (link-time addresses), and the memRecord layout of its release.
//
// Locating the variables. With a .symtab: by name. In stripped (-s -w) binaries the symbol table
// and DWARF are gone, but .gopclntab still names every function and moduledata still bounds the
// data sections, so each variable is found by a census of the runtime functions that use it:
// every RIP-relative memory operand of those functions is decoded (any instruction: mov, cmp,
// lock cmpxchg, ...; x86_decode.h), and the variable is the address that
//   - lies in the data section its type puts it in (moduledata's bounds, else section names):
//       runtime.mbuckets        .bss       (a pointer), accessed as 8 bytes
//       runtime.mProfCycle      .noptrbss  (an atomic uint32), accessed as 4 bytes
//       runtime.MemProfileRate  .noptrdata holding 512*1024 in the file (1.20+), or .noptrbss
//                               (1.19 initializes it at run time), accessed as 8 bytes
//   - is accessed by the most of the variable's anchor functions (at least two, strictly more
//     than any other address): functions that use it in the Go source of every release from
//     1.19 (mProf_FlushLocked, memProfileInternal/MemProfile, mProf_Malloc, profilealloc,
//     mallocgc and its 1.24+ split, schedinit, ...). A function missing in a release (renamed,
//     inlined) only lowers the count; so does a compiler choosing other instructions.
#ifndef PPROF_SIDECAR_AGENT_GORUNTIME_GO_HEAP_VARS_H_
#define PPROF_SIDECAR_AGENT_GORUNTIME_GO_HEAP_VARS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_pclntab.h"

namespace pprof_sidecar {

// Link-time addresses of the runtime variables the heap profile needs, and the record layout.
struct GoHeapVars {
  uint64_t mbuckets = 0;          // runtime.mbuckets (*bucket)
  uint64_t mprof_cycle = 0;       // runtime.mProfCycle (uint32: cycle << 1 | flushed)
  uint64_t mem_profile_rate = 0;  // runtime.MemProfileRate (int)
  std::string method;             // "symtab" or "code"
  std::string census;             // for "code": anchors agreeing per variable, e.g. "3/5 6/7 4/9"
  int cycle_words = 4;            // words per memRecordCycle (GoHeapCycleWords)
  std::string go_version;         // the binary's Go release, if known ("go1.27.4")
};

// Words per memRecordCycle for a Go release ("go1.26.11"): 4 up to Go 1.26, 2 from Go 1.27.
// Releases that do not parse get the newest layout.
int GoHeapCycleWords(absl::string_view go_version);

// By .symtab name; NotFound if the binary has no symbol table or lacks one of the variables.
absl::StatusOr<GoHeapVars> LocateGoHeapVarsBySymtab(const ElfFile& elf);
// By the census of the runtime's code (see the file comment).
absl::StatusOr<GoHeapVars> LocateGoHeapVarsFromCode(const ElfFile& elf, const GoPclntab& pcln);
// Symtab first, then code; the layout and go_version from the binary's build info. Errors name
// the Go release and what could not be located.
absl::StatusOr<GoHeapVars> LocateGoHeapVars(const ElfFile& elf, const GoPclntab& pcln);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GORUNTIME_GO_HEAP_VARS_H_
