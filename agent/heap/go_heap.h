// Reading a Go program's own sampled heap profile out of its memory.
//
// Every Go program samples allocations (one per runtime.MemProfileRate bytes on average) into
// heap-profile buckets: runtime.mbuckets heads a list (linked through bucket.allnext) of
//   bucket header {next, allnext, typ, hash, size, nstk}  (6 words)
//   stack         [nstk]uintptr return PCs, leaf first
//   memRecord     {active, future[3]} of memRecordCycle:
//                   Go 1.19-1.26: {allocs, frees, alloc_bytes, free_bytes} (4 words)
//                   Go 1.27+:     {allocs, frees} (bytes are counts x size)
// Published values follow the runtime's 3-cycle scheme keyed by runtime.mProfCycle; ReadGoHeap
// reproduces exactly what runtime.MemProfile returns (which folds future[cycle % 3] into active,
// and when no GC has completed yet, all of future) without writing to the target. The record
// layout is chosen by the binary's Go release (its build info) and checked on every read.
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
// ReadGoHeap then checks what it finds there (bucket types, stack depths, bytes = counts x size).
// Addresses are link-time; PIE binaries are relocated with the load bias from /proc/PID/maps.
#ifndef PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_
#define PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/goruntime/process_memory.h"
#include "agent/heap/heap_snapshot.h"
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

struct GoHeapReadLimits {
  size_t max_buckets = 1 << 20;
  size_t max_stack = 1024;  // Go 1.23's maxProfStackDepth
  // A probe of the records' validity: stop after max_buckets with what was read (a partial
  // snapshot) instead of failing with ResourceExhausted.
  bool stop_at_max_buckets = false;
};

// Reads the buckets through `mem`. `runtime_vars` holds *runtime* addresses (link-time + load
// bias). FailedPrecondition if MemProfileRate is 0 (memory profiling disabled); DataLoss if the
// bucket list is inconsistent (not a Go heap profile at those addresses, or corrupted).
absl::StatusOr<HeapSnapshot> ReadGoHeap(MemoryReader& mem, const GoHeapVars& runtime_vars,
                                        const GoHeapReadLimits& limits = GoHeapReadLimits());

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_
