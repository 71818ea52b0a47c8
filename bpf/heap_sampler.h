/* Types shared by the malloc sampling BPF program (heap_sampler.bpf.c) and its user-space loader
 * (agent/sampler/bpf_malloc_sampler.cc). Plain C with fixed-width kernel types so that both sides agree
 * on the layout byte for byte. In BPF, vmlinux.h provides __u32 & co; elsewhere they come from
 * <linux/types.h>. */
#ifndef PPROF_SIDECAR_BPF_HEAP_SAMPLER_H_
#define PPROF_SIDECAR_BPF_HEAP_SAMPLER_H_

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Frames kept per sampled allocation stack; bpf_get_stack writes at most this many. */
#define HEAP_SAMPLER_MAX_FRAMES 127

/* Upper bound of the user stack copy of a sampled allocation (the rodata knob `stack_copy_bytes`,
 * a multiple of 8, is the actual bound). */
#define HEAP_SAMPLER_MAX_STACK_COPY 16384

/* Entries of the `sample_intervals` rodata table (a power of two): byte intervals between
 * samples, drawn by the loader from an exponential distribution with the configured mean. */
#define HEAP_SAMPLER_INTERVALS 4096

/* Most address ranges of allocator functions (runtime addresses in the target) whose own calls
 * to another probed allocator function are not counted again (glibc's realloc(NULL, n) and
 * posix_memalign with a small alignment call malloc). */
#define HEAP_SAMPLER_MAX_RANGES 16

/* heap_event.kind */
#define HEAP_EV_ALLOC 1u /* a sampled allocation returned `addr` (struct heap_alloc_event) */
#define HEAP_EV_FREE 2u  /* a sampled, tracked allocation was freed (struct heap_event only) */

/* heap_event.flags */
#define HEAP_EV_F_UNTRACKED 0x1u /* the live map was full: counts in alloc_* only, not inuse_* */
#define HEAP_EV_F_STACK_ERR 0x2u /* bpf_get_stack(BPF_F_USER_STACK) failed: empty stack */

/* Common header of every ring buffer record. */
struct heap_event {
  __u64 addr; /* the allocation's address */
  __u64 size; /* bytes requested (for FREE: as recorded at allocation) */
  __u32 kind; /* HEAP_EV_* */
  __u32 flags;
};

/* A sampled allocation, taken in the return probe: the registers are the caller's right after
 * the call returned (ip = the return address, sp and bp the caller's), from which user space
 * unwinds `stack` (CFI) whatever the frame pointers. user_ips is a frame-pointer walk (leaf
 * first, user_ips[0] = ip) from fp_bp, used to stitch and when there is no copy: the kernel's
 * walk from bp, or, for C code called from Go through cgo, the program's own walk from the
 * goroutine's frame pointer at the switch to the g0 stack (runtime.cgocall's frame).
 * The record ends after `stack_len` bytes of `stack` (variable size). */
struct heap_alloc_event {
  struct heap_event hdr;
  __u32 user_nr;   /* valid entries of user_ips */
  __u32 stack_len; /* bytes of stack copied from sp */
  __u64 ip, sp, bp;
  __u64 fp_bp; /* the frame pointer user_ips[1..] were walked from */
  __u64 user_ips[HEAP_SAMPLER_MAX_FRAMES];
  __u8 stack[HEAP_SAMPLER_MAX_STACK_COPY];
};

/* Value of the live-allocation map (key: address). */
struct heap_live {
  __u64 size;
};

/* Value of the per-thread pending map (key: kernel tid) between an entry and its return. */
struct heap_pending {
  __u64 size;    /* bytes requested */
  __u64 memptr;  /* posix_memalign: where the result is stored */
  __u64 sp;      /* stack pointer at entry: the return must come back to sp + 8 */
  __u64 old_ptr; /* realloc of a tracked block: freed at the return if the call succeeded */
  __u32 sampled; /* the allocation is sampled: the return records it */
  __u32 reserved;
};

/* Indices of the per-CPU `counters` array. */
enum heap_sampler_counter {
  HEAP_CNT_CALLS = 0,         /* allocation calls seen (entry probes) */
  HEAP_CNT_BYTES,             /* bytes requested by those calls */
  HEAP_CNT_SAMPLED,           /* allocations sampled (entry) */
  HEAP_CNT_RECORDED,          /* sampled allocations that returned an address (events) */
  HEAP_CNT_FREES,             /* free calls seen (incl. realloc's old pointer) */
  HEAP_CNT_FREES_TRACKED,     /* frees of tracked (sampled) addresses */
  HEAP_CNT_LIVE_FULL,         /* sampled allocations not tracked: live map full */
  HEAP_CNT_RINGBUF_DROPS,     /* alloc events lost: ring buffer full */
  HEAP_CNT_FREE_DROPS,        /* free events lost: ring buffer full (inuse over-reported) */
  HEAP_CNT_STACK_ERRORS,      /* bpf_get_stack failed */
  HEAP_CNT_PENDING_FULL,      /* sampled entries not remembered: pending map full */
  HEAP_CNT_PENDING_MISMATCH,  /* pending entry of another call found at a return: dropped */
  HEAP_CNT_FAILED,            /* sampled allocations that returned NULL / an error */
  HEAP_CNT_NESTED,            /* allocator calls made by another probed allocator function */
  HEAP_CNT_STACK_COPY_ERRORS, /* sampled allocations whose user stack could not be copied */
  HEAP_CNT_NUM,
};

#endif /* PPROF_SIDECAR_BPF_HEAP_SAMPLER_H_ */
