// Reading a Go program's own sampled heap profile out of its memory.
//
// Every Go program samples allocations (one per runtime.MemProfileRate bytes on average) into
// heap-profile buckets: runtime.mbuckets heads a list (linked through bucket.allnext) of
//   bucket header {next, allnext, typ, hash, size, nstk}  (6 words)
//   stack         [nstk]uintptr return PCs, leaf first
//   memRecord     {active, future[3]}, each {allocs, frees, alloc_bytes, free_bytes} (words)
// The layout is the same in Go 1.19 through 1.23 (1.23 only allows deeper stacks). Published
// values follow the runtime's 3-cycle scheme keyed by runtime.mProfCycle; ReadGoHeap reproduces
// exactly what runtime.MemProfile returns (which folds future[cycle % 3] into active, and when
// no GC has completed yet, all of future) without writing to the target.
//
// Locating the variables. With a .symtab: by name. In stripped (-s -w) binaries the symbol table
// and DWARF are gone, but .gopclntab still names every function, so the agent finds small
// runtime functions that load each variable with one RIP-relative instruction and decodes the
// address from their machine code (x86-64):
//   runtime.mbuckets        the only RIP-relative 64-bit load in runtime.mProf_FlushLocked
//   runtime.mProfCycle      the first RIP-relative 32-bit load in runtime.mProf_PostSweep
//   runtime.MemProfileRate  the RIP-relative 64-bit load in runtime.profilealloc whose register
//                           is then compared with 1 (nextSample's `MemProfileRate == 1`,
//                           inlined), which tells it from the load of runtime.mcache0
// Each candidate must land in a writable data section of the binary. Addresses are link-time;
// PIE binaries are relocated with the load bias from /proc/PID/maps.
#ifndef PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_
#define PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/heap/process_memory.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_pclntab.h"

namespace pprof_sidecar {

// Link-time addresses of the runtime variables the heap profile needs.
struct GoHeapVars {
  uint64_t mbuckets = 0;          // runtime.mbuckets (*bucket)
  uint64_t mprof_cycle = 0;       // runtime.mProfCycle (uint32: cycle << 1 | flushed)
  uint64_t mem_profile_rate = 0;  // runtime.MemProfileRate (int)
  std::string method;             // "symtab" or "code"
};

// By .symtab name; NotFound if the binary has no symbol table or lacks one of the variables.
absl::StatusOr<GoHeapVars> LocateGoHeapVarsBySymtab(const ElfFile& elf);
// From the machine code of runtime functions found through the pclntab (see the file comment).
absl::StatusOr<GoHeapVars> LocateGoHeapVarsFromCode(const ElfFile& elf, const GoPclntab& pcln);
// Symtab first, then code.
absl::StatusOr<GoHeapVars> LocateGoHeapVars(const ElfFile& elf, const GoPclntab& pcln);

// A RIP-relative MOV load (opcode 8B, ModRM mod=00 rm=101) found in machine code.
struct RipLoad {
  uint64_t target = 0;  // link-time address loaded from
  int reg = 0;          // destination register number (0-15, REX.R applied)
  size_t end = 0;       // offset in the code just past the instruction
};
// RIP-relative MOV loads in `code` (which starts at link-time address `code_addr`), in code
// order. `wide` selects REX.W (64-bit) loads, else 32-bit loads without REX.W. A byte-pattern
// scan (no full decoder): callers validate what they use.
std::vector<RipLoad> FindRipRelativeLoads(absl::string_view code, uint64_t code_addr, bool wide);
// True if, after optional NOP padding, `code` at `offset` holds `cmp $imm8, reg` (64-bit).
bool IsCmpImm8At(absl::string_view code, size_t offset, int reg, int8_t imm);

// One bucket as runtime.MemProfile reports it (raw sampled counts, before scaling).
struct GoHeapRecord {
  uint64_t bucket = 0;          // runtime address of the bucket (stable identity)
  uint64_t size = 0;            // allocation size class of the bucket
  std::vector<uint64_t> stack;  // return PCs, leaf first
  int64_t allocs = 0, frees = 0, alloc_bytes = 0, free_bytes = 0;
};

struct GoHeapSnapshot {
  int64_t mem_profile_rate = 0;
  uint32_t cycle = 0;      // heap profile cycle (GCs completed, modulo wrap)
  bool no_gc_yet = false;  // no cycle published yet: all future cycles were folded in
  std::vector<GoHeapRecord> records;
  int retries = 0;  // re-reads because a GC published a cycle while reading
};

struct GoHeapReadLimits {
  size_t max_buckets = 1 << 20;
  size_t max_stack = 1024;  // Go 1.23's maxProfStackDepth
};

// Reads the buckets through `mem`. `runtime_vars` holds *runtime* addresses (link-time + load
// bias). FailedPrecondition if MemProfileRate is 0 (memory profiling disabled); DataLoss if the
// bucket list is inconsistent (not a Go heap profile at those addresses, or corrupted).
absl::StatusOr<GoHeapSnapshot> ReadGoHeap(MemoryReader& mem, const GoHeapVars& runtime_vars,
                                          const GoHeapReadLimits& limits = GoHeapReadLimits());

// Per-bucket difference b - a (buckets matched by address; buckets only in b count fully).
// Used for ?seconds=N delta profiles. Records whose difference is all zero are dropped.
GoHeapSnapshot SubtractGoHeap(const GoHeapSnapshot& b, const GoHeapSnapshot& a);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_
