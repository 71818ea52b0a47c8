// BPF malloc sampler for one target process (for a Go program, the C library it maps: its C
// code's allocations): uprobes on the allocator functions it actually maps (bpf/heap_sampler.bpf.c
// does the sampling), a reader thread feeding a MallocProfileState.
//
// Covered functions: malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc,
// pvalloc (entry + return probes) and free (entry), in
//   - the C library the target maps (glibc libc.so.6, musl's ld-musl-*.so.1), and
//   - the executable, when it defines them itself (tcmalloc/jemalloc/mimalloc linked
//     statically), and a mapped libjemalloc/libtcmalloc/libmimalloc shared library.
// Binaries are opened and probed through /proc/PID/map_files (the very inode mapped, in the
// target's mount namespace), else /proc/PID/root/<path>. Probes carry the target's pid, so the
// kernel installs breakpoints in that process only. Go executables are never probed (Go moves
// stacks: a return probe on a Go function crashes it).
//
// Probes sit on code addresses, so aliases and internal callers of the same code are covered too
// (glibc's reallocarray and __libc_malloc). A realloc frees its old block only when it succeeds
// (decided in the return probe). Not covered: new/delete of a C++ runtime that does not call
// malloc (libstdc++'s operator new does call malloc, so it is covered), mmap, allocator code
// that is not one of those functions (_int_malloc). Allocators mapped after the attach (dlopen,
// or the C library of a target caught right after exec) are probed by ProbeNewMappings(), which
// the agent calls on every target check (every 500 ms by default): allocations they serve before
// that are not seen.
// Stacks of sampled allocations are unwound in user space from the caller's registers at the
// allocator's return and a bounded copy of its stack (CFI, as for CPU samples: SampleUnwinder),
// stitched to the kernel's frame-pointer walk; without a copy, the frame-pointer walk alone. In
// a Go program's C code called through cgo, the frame-pointer walk starts at the goroutine's
// frame pointer saved at the switch to the g0 stack (its g.sched.bp), whatever C did with rbp.
//
// Everything is detached when the object is destroyed (RAII: links, ring buffer, skeleton).
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_MALLOC_SAMPLER_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_MALLOC_SAMPLER_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/heap/allocator_probes.h"
#include "agent/heap/malloc_profile_state.h"
#include "agent/symbolize/proc_maps.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

class GoBinaryCache;
class UnwindTableCache;

struct MallocSamplerOptions {
  int64_t sample_bytes = 512 * 1024;  // mean bytes between samples; 1 samples every allocation
  uint32_t max_live = 1 << 20;        // live sampled allocations tracked for inuse_*
  uint32_t max_buckets = 1 << 16;     // distinct (stack, size) buckets in user space
  // Ring buffer size in bytes, a power of two >= 4096; 0 sizes it for sample_bytes: ~100 ms of
  // sampled records (~1 KiB + the stack copy each) of a target allocating 1.3 GB/s, within
  // [256 KiB, 8 MiB] (4 MiB at the default rate and stack copy). The ring is mapped twice into the
  // agent and all of it counts in its RSS from the start. Drops are counted (ringbuf_drops).
  uint32_t ringbuf_bytes = 0;
  // Records wake the reader only once this many bytes wait (at most a quarter of the ring, the
  // default); it also polls every 100 ms and drains the ring before every snapshot. 0: libbpf's
  // default (a wakeup whenever the reader has caught up: one per record at low rates).
  uint32_t wakeup_bytes = UINT32_MAX;
  // Sampled allocations carry this many bytes of their caller's stack (a multiple of 8, at most
  // 16384), unwound in user space with CFI through `symbolizer`'s binaries, so that callers built
  // without frame pointers keep their frames. 0, or no symbolizer: frame-pointer walks only.
  // Unsampled calls never pay for it.
  uint32_t stack_copy_bytes = 8192;
  // Where the kernel has uprobe sessions (6.13+), one session per function instead of an uprobe
  // and a uretprobe: the return is probed only for sampled calls (and reallocs of sampled
  // blocks), so unsampled calls pay one breakpoint instead of two.
  bool uprobe_sessions = true;
  ProcessSymbolizer* symbolizer = nullptr;  // outlives the sampler
  // The unwinding tables of `symbolizer`'s binaries, shared with the CPU profiles' unwinder (null:
  // the sampler builds its own). Outlives the sampler.
  UnwindTableCache* unwind_tables = nullptr;
  // The agent's Go binaries (agent/goruntime), for a cgo target's runtime layout (null: the
  // sampler opens the target's binary itself). Outlives the sampler.
  GoBinaryCache* go_binaries = nullptr;
};

// OK if the agent holds what malloc probes need beyond the CPU sampler's capabilities: uprobes
// through the perf PMU need CAP_SYS_ADMIN on kernels with the 2025 uprobe fix; uprobe sessions
// (used when `options` allow and the kernel has them) need none. Else a FailedPrecondition
// naming the capability (on kernels without the fix the attach may work without it).
absl::Status MallocSamplerPrivileges(const MallocSamplerOptions& options);

// Loads the BPF program, attaches it to `pid`'s allocator and starts reading. Errors:
// InvalidArgument (options), NotFound (process gone / no allocator found), FailedPrecondition
// (uprobes refused and the agent lacks CAP_SYS_ADMIN: the message names it), PermissionDenied
// (needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE).
absl::StatusOr<std::unique_ptr<NativeHeapSource>> StartMallocSampler(
    pid_t pid, const MallocSamplerOptions& options);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_MALLOC_SAMPLER_H_
