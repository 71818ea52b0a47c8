// SPDX-License-Identifier: GPL-2.0
/* Malloc sampling program: entry uprobes and return uretprobes on the allocator functions of one
 * target process (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc,
 * pvalloc; free). malloc_entry serves every allocator whose first argument is the size.
 *
 * Sampling is by bytes, like Go's runtime: a per-CPU countdown of bytes until the next sample is
 * decremented by each allocation's size; the allocation that takes it to zero or below is
 * sampled and the countdown is redrawn from an exponential distribution (the loader's
 * `sample_intervals` table, mean = the sampling rate). So an allocation of s bytes is sampled
 * with probability 1 - exp(-s/rate), which user space undoes like runtime/pprof.
 *
 * A sampled entry remembers its size per thread (`pending`); its return probe captures the user
 * stack (frame pointers), emits a heap_alloc_event and records the address in `live`. `free`
 * looks the address up in `live` and emits a heap_event FREE on a hit. Return probes of
 * unsampled calls cost one hash lookup that misses. One object is loaded per target process. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "bpf/heap_sampler.h"

char LICENSE[] SEC("license") = "GPL";

/* Uprobe sessions (6.13+): the loader loads the *_session programs only where the kernel has
 * them (weak: resolved to nothing elsewhere, where those programs are not loaded). */
extern bool bpf_session_is_return(void) __ksym __weak;

/* Set by the loader between open and load. */
const volatile __u64 pidns_dev = 0;   /* st_dev of /proc/self/ns/pid of the agent */
const volatile __u64 pidns_ino = 0;   /* st_ino of /proc/self/ns/pid of the agent */
const volatile __u32 target_tgid = 0; /* the target, in the agent's pid namespace */
const volatile __u32 sample_all = 0;  /* rate 1: every allocation is sampled */
const volatile __u64 sample_intervals[HEAP_SAMPLER_INTERVALS] = {};
/* 0: records wake the reader as libbpf's default does (when it has caught up). Else only once
 * this many bytes wait: the reader also polls on a timer and drains before every snapshot. A
 * wakeup is an irq_work self-interrupt on the allocating thread's CPU (~15 us in a VM). */
const volatile __u32 wakeup_bytes = 0;
/* Bytes of user stack copied per sampled allocation (multiple of 8, <= MAX_STACK_COPY; 0: none,
 * frame pointers only). */
const volatile __u32 stack_copy_bytes = 0;

/* Set by the loader when the kernel has bpf_get_attach_cookie for uprobes (5.15+): probes placed
 * after an argument moved to another register say where it is in their cookie. */
const volatile __u32 arg_cookies = 0;

/* Set by the loader when it attaches sessions: tail calls are then told by last_entry. */
const volatile __u32 sessions = 0;

/* A Go target (cgo): offsets of runtime.g.m, runtime.m.curg and runtime.g.sched.bp in its
 * release (agent/goruntime layouts); 0: not Go, no cgo stack walk. */
const volatile __u32 go_g_m = 0;
const volatile __u32 go_m_curg = 0;
const volatile __u32 go_g_sched_bp = 0;

/* The probed allocator functions' address ranges in the target, for nested_call(). Written by
 * the agent at any time (allocators mapped after attach add ranges): entries first, then
 * nested_n; a reader racing a rewrite at worst misjudges one call as not nested. */
volatile __u32 nested_n = 0; /* valid entries of nested_lo/hi */
volatile __u64 nested_lo[HEAP_SAMPLER_MAX_RANGES];
volatile __u64 nested_hi[HEAP_SAMPLER_MAX_RANGES];

/* Sampled allocations not freed yet: address -> size. max_entries set by the loader. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1 << 16);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u64);
  __type(value, struct heap_live);
} live SEC(".maps");

/* Sessions: the last allocation entry of each thread (kernel tid). */
struct heap_last_entry {
  __u64 sp, ret, ip;
};
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, struct heap_last_entry);
} last_entry SEC(".maps");

/* Sampled calls between entry and return: kernel tid -> pending. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, struct heap_pending);
} pending SEC(".maps");

/* Bytes left until the next sample, per CPU (0: not drawn yet). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __s64);
} countdown SEC(".maps");

/* max_entries (bytes) is set by the loader before load. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Where a sampled allocation's record is assembled before it is output at its actual size. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct heap_alloc_event);
} scratch SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, HEAP_CNT_NUM);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

/* Slot (in 8-byte words) of each x86 register, by ModRM number, in x86-64's struct pt_regs (a
 * fixed kernel ABI: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp),
 * one byte per register (no table: a static array in .rodata breaks the object's BTF). */
#define PT_REGS_SLOTS_0_7 0x0E0D0413050C0B0AULL  /* ax cx dx bx sp bp si di */
#define PT_REGS_SLOTS_8_15 0x0001020306070809ULL /* r8 .. r15 */

/* The value of x86 register `r` (ModRM numbering) in `ctx`. A read at a computed offset: the
 * verifier allows no variable-offset access to the context itself. */
static __always_inline __u64 reg_value(struct pt_regs *ctx, __u32 r) {
  const __u64 slots = (r & 8) ? PT_REGS_SLOTS_8_15 : PT_REGS_SLOTS_0_7;
  const __u64 slot = (slots >> ((r & 7) * 8)) & 0xff;
  __u64 v = 0;
  bpf_probe_read_kernel(&v, sizeof(v), (const void *)((__u64)ctx + slot * 8));
  return v;
}

/* Argument `i` (0..2) of the probed call: `abi` (the value of its ABI register) unless the
 * probe's cookie says it sits in another register at the probed instruction (4 bits per
 * argument: register number + 1; 0: unmoved). */
static __always_inline __u64 arg(struct pt_regs *ctx, int i, __u64 abi) {
  if (!arg_cookies) return abi;
  __u32 r = (bpf_get_attach_cookie(ctx) >> (4 * i)) & 0xf;
  return r == 0 ? abi : reg_value(ctx, r - 1);
}

static __always_inline __u64 submit_flags(void) {
  if (!wakeup_bytes) return 0;
  return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
                                                                       : BPF_RB_NO_WAKEUP;
}

static __always_inline void add(__u32 idx, __u64 n) {
  __u64 *v = bpf_map_lookup_elem(&counters, &idx);
  if (v) *v += n;
}

static __always_inline __s64 draw_interval(void) {
  __u32 i = bpf_get_prandom_u32() & (HEAP_SAMPLER_INTERVALS - 1);
  __s64 v = (__s64)sample_intervals[i];
  return v > 0 ? v : 1;
}

/* True if the current thread belongs to the target. The kernel already filters uprobe hits by
 * the target's mm; this guards the rare paths that record something (a forked child shares the
 * breakpoints until exec). Threads of nested pid namespaces, where the helper cannot answer, are
 * accepted on the kernel's filter alone. */
static __always_inline int is_target(void) {
  struct bpf_pidns_info ns = {};
  if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)) == 0) {
    return ns.tgid == target_tgid;
  }
  return 1;
}

/* Entry of an allocation of `size` bytes: decides whether it is sampled. */
/* Sessions put no return probe on unsampled calls, so a tail call from one allocator function to
 * another (glibc's realloc(NULL, n), a malloc that forwards to __libc_malloc) leaves no
 * trampoline behind. It is told by the thread's previous allocation entry instead: the same
 * stack pointer and return address (nothing of the outer call left on the stack) in another
 * probed function (a call site calls one function, so a loop's consecutive calls never match:
 * the inner call of a tail call does not replace the outer one as the last entry). */
static __always_inline int tail_called(struct pt_regs *ctx, __u64 ret) {
  __u32 tid = (__u32)bpf_get_current_pid_tgid();
  struct heap_last_entry now = {.sp = PT_REGS_SP(ctx), .ret = ret, .ip = PT_REGS_IP(ctx)};
  struct heap_last_entry *prev = bpf_map_lookup_elem(&last_entry, &tid);
  if (prev && prev->sp == now.sp && prev->ret == now.ret && prev->ip != now.ip) {
    return 1; /* the outer call stays the last entry: its next call from here is not nested */
  }
  if (prev) {
    *prev = now;
  } else {
    bpf_map_update_elem(&last_entry, &tid, &now, BPF_ANY);
  }
  return 0;
}

/* True if the probed allocator function was called by another probed allocator function: that
 * allocation is the outer call's and is counted there. Two cases, told by the return address
 * at the top of the stack on entry:
 *  - a call: it lies in one of the allocator functions (nested_lo/hi);
 *  - a tail call (glibc's realloc(NULL, n) jumps to malloc): the outer function's return probe
 *    already replaced it with the uretprobe trampoline, in the process's uprobe XOL page. */
static __always_inline int nested_call(struct pt_regs *ctx) {
  __u64 ret = 0;
  if (bpf_probe_read_user(&ret, sizeof(ret), (const void *)PT_REGS_SP(ctx))) return 0;
  /* Not bpf_get_current_task_btf (5.11): the field is read with BPF_CORE_READ either way. */
  struct task_struct *task = (struct task_struct *)bpf_get_current_task();
  __u64 xol = BPF_CORE_READ(task, mm, uprobes_state.xol_area, vaddr);
  if (xol != 0 && ret >= xol && ret < xol + 4096) return 1;
  __u32 n = nested_n;
  for (int i = 0; i < HEAP_SAMPLER_MAX_RANGES; i++) {
    if (i >= n) break;
    if (ret >= nested_lo[i] && ret < nested_hi[i]) return 1;
  }
  if (sessions) return tail_called(ctx, ret);
  return 0;
}

/* Whether an allocation of `size` bytes entering now is sampled (counts the call either way). */
static __always_inline int sample_alloc(struct pt_regs *ctx, __u64 size) {
  if (nested_call(ctx)) {
    add(HEAP_CNT_NESTED, 1);
    return 0;
  }
  add(HEAP_CNT_CALLS, 1);
  add(HEAP_CNT_BYTES, size);
  if (size == 0) return 0;
  if (!sample_all) {
    __u32 zero = 0;
    __s64 *left = bpf_map_lookup_elem(&countdown, &zero);
    if (!left) return 0;
    __s64 v = *left;
    if (v == 0) v = draw_interval();
    v -= (__s64)size;
    if (v > 0) {
      *left = v;
      return 0;
    }
    *left = draw_interval();
  }
  if (!is_target()) return 0;
  add(HEAP_CNT_SAMPLED, 1);
  return 1;
}

/* Remembers the call for its return probe. */
static __always_inline void put_pending(struct pt_regs *ctx, __u64 size, __u64 memptr,
                                        __u64 old_ptr, __u32 sampled) {
  __u32 tid = (__u32)bpf_get_current_pid_tgid();
  struct heap_pending p = {.size = size,
                           .memptr = memptr,
                           .sp = PT_REGS_SP(ctx),
                           .old_ptr = old_ptr,
                           .sampled = sampled};
  if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY)) add(HEAP_CNT_PENDING_FULL, 1);
}

static __always_inline int on_alloc_entry(struct pt_regs *ctx, __u64 size, __u64 memptr) {
  if (sample_alloc(ctx, size)) put_pending(ctx, size, memptr, 0, 1);
  return 0;
}

static __always_inline void on_free(__u64 addr) {
  add(HEAP_CNT_FREES, 1);
  if (addr == 0) return;
  struct heap_live *l = bpf_map_lookup_elem(&live, &addr);
  if (!l) return;
  if (!is_target()) return;
  __u64 size = l->size;
  if (bpf_map_delete_elem(&live, &addr)) return; /* freed concurrently: counted once */
  add(HEAP_CNT_FREES_TRACKED, 1);
  struct heap_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    add(HEAP_CNT_FREE_DROPS, 1);
    return;
  }
  e->addr = addr;
  e->size = size;
  e->kind = HEAP_EV_FREE;
  e->flags = 0;
  bpf_ringbuf_submit(e, submit_flags());
}

/* Copies up to `want` bytes of user stack at `sp` into `dst` and returns how many. A copy running
 * past the stack's end (an unmapped page above the main thread's stack) fails as a whole: it is
 * retried with lengths that end at page boundaries, longest first. */
static __always_inline __u32 copy_stack(__u8 *dst, __u64 sp, __u32 want) {
  if (want == 0 || sp == 0) return 0;
  if (want > HEAP_SAMPLER_MAX_STACK_COPY) want = HEAP_SAMPLER_MAX_STACK_COPY;
  if (bpf_probe_read_user(dst, want, (const void *)sp) == 0) return want;
  const __u64 to_page_end = 4096 - (sp & 4095);
  for (int pages = HEAP_SAMPLER_MAX_STACK_COPY / 4096; pages >= 0; pages--) {
    __u64 len = to_page_end + (__u64)pages * 4096;
    if (len >= want) continue;
    asm volatile("" : "+r"(len)); /* keep the bound check below for the verifier */
    if (len > HEAP_SAMPLER_MAX_STACK_COPY) continue;
    if (bpf_probe_read_user(dst, len, (const void *)sp) == 0) return len;
  }
  return 0;
}

/* C code called from Go through cgo runs on the thread's g0 stack, and its rbp need not be the
 * Go caller's frame pointer any more (C code may use rbp as a general register). The goroutine's
 * frame pointer at the switch is its g.sched.bp (runtime.asmcgocall saves it: runtime.cgocall's
 * frame); the goroutine is m.curg of the thread's m, whose g0 is the g in the thread's TLS slot
 * (fs_base - 8) while it runs C. 0 when the target is not Go or the thread is not on its g0
 * stack (a thread C created, a signal handler, Go code). */
static __always_inline __u64 cgo_goroutine_bp(void) {
  if (go_g_sched_bp == 0) return 0;
  struct task_struct *task = (struct task_struct *)bpf_get_current_task();
  __u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
  __u64 g = 0, m = 0, g0 = 0, curg = 0, bp = 0;
  if (fsbase <= 8 || bpf_probe_read_user(&g, sizeof(g), (const void *)(fsbase - 8)) || g == 0) {
    return 0;
  }
  if (bpf_probe_read_user(&m, sizeof(m), (const void *)(g + go_g_m)) || m == 0) return 0;
  /* runtime.m.g0 is m's first field in every release. */
  if (bpf_probe_read_user(&g0, sizeof(g0), (const void *)m) || g0 != g) return 0;
  if (bpf_probe_read_user(&curg, sizeof(curg), (const void *)(m + go_m_curg)) || curg == 0 ||
      curg == g) {
    return 0;
  }
  if (bpf_probe_read_user(&bp, sizeof(bp), (const void *)(curg + go_g_sched_bp))) return 0;
  return bp;
}

/* Frame-pointer walk from `fp` into ips[first..]: [fp] is the caller's frame pointer, [fp + 8]
 * the return address; frames go up the stack. Returns the number of valid entries of ips. */
static __always_inline __u32 walk_fp(__u64 *ips, __u32 first, __u64 fp) {
  __u32 n = first;
  for (int i = 0; i < HEAP_SAMPLER_MAX_FRAMES; i++) {
    __u64 rec[2];
    if (n >= HEAP_SAMPLER_MAX_FRAMES || fp == 0 || (fp & 7) ||
        bpf_probe_read_user(rec, sizeof(rec), (const void *)fp) || rec[1] == 0) {
      break;
    }
    ips[n++] = rec[1];
    if (rec[0] <= fp) break;
    fp = rec[0];
  }
  return n;
}

/* Return of an allocation: `addr` is the result (0 on failure), `ok` whether it succeeded. */
static __always_inline int on_alloc_return(struct pt_regs *ctx, int posix_memalign) {
  __u32 tid = (__u32)bpf_get_current_pid_tgid();
  struct heap_pending *pp = bpf_map_lookup_elem(&pending, &tid);
  if (!pp) return 0;
  struct heap_pending p = *pp;
  bpf_map_delete_elem(&pending, &tid);
  /* The return lands at the entry's sp + 8 (the return address popped). Anything else is a
   * pending entry of another call (e.g. one whose return was never seen). */
  if (PT_REGS_SP(ctx) != p.sp + 8) {
    add(HEAP_CNT_PENDING_MISMATCH, 1);
    return 0;
  }
  /* realloc of a tracked block: freed when the call succeeded (realloc(p, 0) frees and may
   * return NULL); a failed realloc leaves it live. */
  if (p.old_ptr != 0 && (PT_REGS_RC(ctx) != 0 || p.size == 0)) on_free(p.old_ptr);
  if (!p.sampled) return 0;
  __u64 addr = 0;
  if (posix_memalign) {
    if (PT_REGS_RC(ctx) == 0 && p.memptr != 0) {
      bpf_probe_read_user(&addr, sizeof(addr), (const void *)p.memptr);
    }
  } else {
    addr = PT_REGS_RC(ctx);
  }
  if (addr == 0) {
    add(HEAP_CNT_FAILED, 1);
    return 0;
  }
  __u32 zero = 0;
  struct heap_alloc_event *e = bpf_map_lookup_elem(&scratch, &zero);
  if (!e) return 0;
  e->hdr.addr = addr;
  e->hdr.size = p.size;
  e->hdr.kind = HEAP_EV_ALLOC;
  e->hdr.flags = 0;
  e->ip = PT_REGS_IP(ctx);
  e->sp = PT_REGS_SP(ctx);
  e->bp = PT_REGS_FP(ctx);
  e->fp_bp = cgo_goroutine_bp();
  if (e->fp_bp != 0 && e->fp_bp != e->bp) {
    e->user_ips[0] = e->ip;
    e->user_nr = walk_fp(e->user_ips, 1, e->fp_bp);
  } else {
    e->fp_bp = e->bp;
    long n = bpf_get_stack(ctx, e->user_ips, sizeof(e->user_ips), BPF_F_USER_STACK);
    if (n < 0) {
      e->user_nr = 0;
      e->hdr.flags |= HEAP_EV_F_STACK_ERR;
      add(HEAP_CNT_STACK_ERRORS, 1);
    } else {
      e->user_nr = n / sizeof(__u64);
    }
  }
  e->stack_len = copy_stack(e->stack, e->sp, stack_copy_bytes);
  if (stack_copy_bytes != 0 && e->stack_len == 0) add(HEAP_CNT_STACK_COPY_ERRORS, 1);
  /* The address reaches the caller only after this probe: no free of it can race the update. */
  struct heap_live l = {.size = p.size};
  if (bpf_map_update_elem(&live, &addr, &l, BPF_ANY)) {
    e->hdr.flags |= HEAP_EV_F_UNTRACKED;
    add(HEAP_CNT_LIVE_FULL, 1);
  }
  __u64 len = e->stack_len;
  if (len > HEAP_SAMPLER_MAX_STACK_COPY) len = HEAP_SAMPLER_MAX_STACK_COPY;
  if (bpf_ringbuf_output(&events, e, __builtin_offsetof(struct heap_alloc_event, stack) + len,
                         submit_flags())) {
    add(HEAP_CNT_RINGBUF_DROPS, 1);
    return 0;
  }
  add(HEAP_CNT_RECORDED, 1);
  return 0;
}

SEC("uprobe")
int BPF_KPROBE(malloc_entry, __u64 size) { return on_alloc_entry(ctx, arg(ctx, 0, size), 0); }

SEC("uprobe")
int BPF_KPROBE(calloc_entry, __u64 nmemb, __u64 size) {
  nmemb = arg(ctx, 0, nmemb);
  size = arg(ctx, 1, size);
  /* Factors of 4 GiB or more are not sampled (no 128-bit multiply in BPF to check overflow). */
  if ((nmemb | size) >> 32) return 0;
  return on_alloc_entry(ctx, nmemb * size, 0);
}

/* realloc(p, n): n bytes are allocated and, if the call succeeds, p is freed (at the return:
 * a failed realloc keeps p live). realloc(p, 0) only frees. */
SEC("uprobe")
int BPF_KPROBE(realloc_entry, __u64 ptr, __u64 size) {
  ptr = arg(ctx, 0, ptr);
  size = arg(ctx, 1, size);
  __u64 old_ptr = 0;
  if (ptr != 0 && bpf_map_lookup_elem(&live, &ptr) && is_target()) old_ptr = ptr;
  __u32 sampled = sample_alloc(ctx, size);
  if (sampled || old_ptr) put_pending(ctx, size, 0, old_ptr, sampled);
  return 0;
}

SEC("uprobe")
int BPF_KPROBE(posix_memalign_entry, __u64 memptr, __u64 alignment, __u64 size) {
  return on_alloc_entry(ctx, arg(ctx, 2, size), arg(ctx, 0, memptr));
}

/* aligned_alloc(alignment, size) and memalign(alignment, size). */
SEC("uprobe")
int BPF_KPROBE(aligned_entry, __u64 alignment, __u64 size) {
  return on_alloc_entry(ctx, arg(ctx, 1, size), 0);
}

SEC("uprobe")
int BPF_KPROBE(free_entry, __u64 ptr) {
  on_free(arg(ctx, 0, ptr));
  return 0;
}

/* Return of malloc, calloc, realloc, aligned_alloc, memalign, valloc, pvalloc. */
SEC("uretprobe")
int BPF_KPROBE(alloc_return) { return on_alloc_return(ctx, 0); }

SEC("uretprobe")
int BPF_KPROBE(posix_memalign_return) { return on_alloc_return(ctx, 1); }

/* Sessions: one program serves a function's entry and, only when the entry returns 0, its
 * return. Unsampled calls return 1 at the entry: no return probe, no trampoline, no second trap.
 * The loader attaches them through uprobe_multi links with the BPF_TRACE_UPROBE_SESSION type. */
static __always_inline int session_alloc(struct pt_regs *ctx, __u64 size, __u64 memptr,
                                         int posix_memalign) {
  if (bpf_session_is_return()) return on_alloc_return(ctx, posix_memalign);
  if (!sample_alloc(ctx, size)) return 1;
  put_pending(ctx, size, memptr, 0, 1);
  return 0;
}

SEC("uprobe")
int BPF_KPROBE(malloc_session, __u64 size) {
  return session_alloc(ctx, arg(ctx, 0, size), 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(calloc_session, __u64 nmemb, __u64 size) {
  if (bpf_session_is_return()) return on_alloc_return(ctx, 0);
  nmemb = arg(ctx, 0, nmemb);
  size = arg(ctx, 1, size);
  if ((nmemb | size) >> 32) return 1;
  return session_alloc(ctx, nmemb * size, 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(realloc_session, __u64 ptr, __u64 size) {
  if (bpf_session_is_return()) return on_alloc_return(ctx, 0);
  ptr = arg(ctx, 0, ptr);
  size = arg(ctx, 1, size);
  __u64 old_ptr = 0;
  if (ptr != 0 && bpf_map_lookup_elem(&live, &ptr) && is_target()) old_ptr = ptr;
  __u32 sampled = sample_alloc(ctx, size);
  if (!sampled && !old_ptr) return 1;
  put_pending(ctx, size, 0, old_ptr, sampled);
  return 0;
}

SEC("uprobe")
int BPF_KPROBE(posix_memalign_session, __u64 memptr, __u64 alignment, __u64 size) {
  return session_alloc(ctx, arg(ctx, 2, size), arg(ctx, 0, memptr), 1);
}

SEC("uprobe")
int BPF_KPROBE(aligned_session, __u64 alignment, __u64 size) {
  return session_alloc(ctx, arg(ctx, 1, size), 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(free_session, __u64 ptr) {
  if (!bpf_session_is_return()) on_free(arg(ctx, 0, ptr));
  return 1;
}
