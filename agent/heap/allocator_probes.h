// Where the malloc sampler puts its uprobes: the allocator functions a target maps, and the
// instruction of each that is probed. Pure code over the target's files and machine code (no BPF,
// no privileges beyond reading /proc/PID): unit-tested and fuzzed without libbpf.
//
// Functions: malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc, pvalloc,
// free, in
//   - the C library the target maps (glibc libc.so.6, musl's ld-musl-*.so.1), and
//   - the executable, when it defines them itself (tcmalloc/jemalloc/mimalloc linked
//     statically), and a mapped libjemalloc/libtcmalloc/libmimalloc shared library.
// Binaries are opened through /proc/PID/map_files (the very inode mapped, in the target's mount
// namespace), else /proc/PID/root/<path>. Go executables are never probed (Go moves stacks: a
// return probe on a Go function crashes it).
#ifndef PPROF_SIDECAR_AGENT_HEAP_ALLOCATOR_PROBES_H_
#define PPROF_SIDECAR_AGENT_HEAP_ALLOCATOR_PROBES_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/proc_maps.h"
#include "agent/symbolize/target_file.h"

namespace pprof_sidecar {

// One function to probe.
struct AllocatorProbe {
  std::string function;  // "malloc", ...
  std::string binary;    // what the agent opened (/proc/PID/map_files/... or /proc/PID/root/...)
  // That file, open (target_file.h); probes attach through it if the map_files link is refused.
  std::shared_ptr<const TargetFd> file;
  std::string mapped;        // path as the target sees it
  uint64_t inode = 0;        // of the mapped file
  uint64_t file_offset = 0;  // of the probed instruction (see PlaceEntryProbe)
  uint32_t skipped = 0;      // bytes between the function's entry and that instruction
  bool emulated = false;     // that instruction is one the kernel emulates (no single-step)
  // Where the arguments are at that instruction (ProbePlacement::ArgCookie; 0: the ABI's
  // registers). Passed to the BPF programs as the probe's cookie.
  uint64_t cookie = 0;
  // The whole function in the target's address space (0, 0 if unknown): calls it makes to
  // other probed functions are not counted twice.
  uint64_t runtime_start = 0, runtime_end = 0;
};

// x86-64 register numbers (ModRM encoding) as bits of PlaceEntryProbe's `arg_regs`.
enum : uint32_t {
  kRegRdi = 1u << 7,
  kRegRsi = 1u << 6,
  kRegRdx = 1u << 2,
};
// The argument registers the entry program of `function` reads (0 for an unknown function).
uint32_t AllocatorArgRegs(absl::string_view function);

struct ProbePlacement {
  size_t offset = 0;      // from the function's entry
  bool emulated = false;  // the instruction there is one the kernel emulates
  // The register (x86 number) holding each of the first three integer arguments there; -1: the
  // ABI's (rdi, rsi, rdx), unchanged.
  int arg_reg[3] = {-1, -1, -1};
  // arg_reg as the BPF programs' cookie: 4 bits per argument, (register number + 1), 0 for the
  // ABI's register. 0 when no argument moved.
  uint64_t ArgCookie() const;
};

// Where to put an entry probe (and the return probe, at the same address) in a function whose
// code starts at `code[0]` (the whole function when its size is known). A uprobe on an
// instruction the kernel cannot emulate is single-stepped out of line: a second exception per
// call, which costs many times the rest of the hit (BENCHMARKS.md). x86 uprobes emulate push,
// call, jmp, jcc and nop; so the probe goes on the first such instruction of the function's
// straight-line start when every instruction before it
//   - is one whose effects are known (mov, lea, ALU, cmp/test, shifts, ...: no push/pop/call),
//   - leaves %rsp and the argument registers `arg_regs` (bits: 1 << register number) unchanged,
// and no direct branch of the function lands after the entry at or before it (so it runs once
// per call, with the return address at %rsp). Entry semantics hold there: the BPF program reads
// the same arguments and return address, and the return probe hijacks the same return address.
// With `follow_moves`, an argument register may be overwritten once a register-to-register mov
// has copied it (mimalloc's malloc moves its size from rdi to rsi): the placement then says
// where each argument is (arg_reg), for programs that read arguments through the cookie.
// Otherwise the entry (past a leading endbr64), not emulated.
ProbePlacement PlaceEntryProbe(absl::string_view code, uint32_t arg_regs,
                               bool follow_moves = false);

// Shared libraries that carry a malloc implementation (by base name).
bool IsAllocatorLibrary(absl::string_view path);

// What FindAllocatorProbes depends on in `maps`: the executable and allocator libraries mapped
// executable, with their addresses. Unchanged key: nothing new to probe.
std::string AllocatorMappingsKey(pid_t pid, const std::vector<MapEntry>& maps);

// The allocator functions defined in the binaries `pid` maps (see the file comment), from
// `maps` (/proc/PID/maps), each at its PlaceEntryProbe offset (`follow_moves`: the BPF
// programs read arguments through cookies). NotFound if none is found.
absl::StatusOr<std::vector<AllocatorProbe>> FindAllocatorProbes(pid_t pid,
                                                                const std::vector<MapEntry>& maps,
                                                                bool follow_moves = false);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_ALLOCATOR_PROBES_H_
