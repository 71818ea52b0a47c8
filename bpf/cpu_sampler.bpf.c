// SPDX-License-Identifier: GPL-2.0
/* CPU sampling programs: `cpu_tick` at the scheduler tick, or `cpu_sample` attached to per-CPU
 * software cpu-clock perf events (one of the two is attached). For every sample of a thread of a
 * target process they emit one cpu_sample_record (stacks, user registers, a copy of the top of
 * the user stack) to the `events` ring buffer. Threads of other processes are never recorded. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "bpf/cpu_sampler.h"

char LICENSE[] SEC("license") = "GPL";

/* Two objects are built from this file: the default one, and with CPU_SAMPLER_COMPAT the one for
 * kernels older than 5.17 (down to 5.10), which lacks what those kernels refuse at load whether
 * or not it would run: bpf_loop and bpf_find_vma (callback functions, 5.17), task storage and
 * bpf_get_current_task_btf (5.11), bpf_task_pt_regs (5.15). docs/DESIGN.md ("Kernels") lists
 * what each costs when it is missing. */
#ifdef CPU_SAMPLER_COMPAT
#define current_task() ((struct task_struct *)bpf_get_current_task())
#else
#define current_task() bpf_get_current_task_btf()
#endif

/* Set by the loader between open and load. */
const volatile __u64 pidns_dev = 0; /* st_dev of /proc/self/ns/pid of the agent */
const volatile __u64 pidns_ino = 0; /* st_ino of /proc/self/ns/pid of the agent */
const volatile __u32 user_stack_copy_bytes = 0; /* upper bound of the stack copy */
const volatile __u32 copy_bound = 0;            /* CPU_SAMPLER_BOUND_* bits */
/* Most frames of the kernel's frame-pointer walk of the user stack (bpf_get_stack with
 * BPF_F_USER_STACK); 0: no walk. */
const volatile __u32 user_fp_walk = CPU_SAMPLER_MAX_FRAMES;
/* 0: every record wakes the reader. Else records are submitted without a wakeup unless this
 * many bytes are waiting (the reader also polls on a short timer and before a window ends). */
const volatile __u32 wakeup_bytes = 0;
#ifdef CPU_SAMPLER_BENCH
/* The bench build (bench/sampler_bench only) turns parts of the program off or times them, to
 * measure what each costs; the agent's builds have them fixed as defined below. */
/* 1: walk the frame pointers here (walk_user_fp); 0: with the kernel's walker (bpf_get_stack). */
const volatile __u32 own_fp_walk = 0;
/* 1: accumulate the time spent in each stage of kept samples in `stage_ns`. */
const volatile __u32 stage_timing = 0;
/* 1: return at once (prices the invocation itself and the BPF statistics). */
const volatile __u32 null_program = 0;
/* 1: remember the last filter verdict of each CPU (see `verdicts`). */
const volatile __u32 verdict_cache = 0;
/* 1: the frame-pointer walk reads frames inside the stack copy from the copy. */
const volatile __u32 walk_in_copy = 0;
#else
#define own_fp_walk 1
#define stage_timing 0
#define null_program 0
#define verdict_cache 1
#ifdef CPU_SAMPLER_COMPAT
/* Without bpf_loop the verifier walks every frame of the walk: reading frames from the copy, a
 * branch per frame, would multiply its states past its limit. */
#define walk_in_copy 0
#else
#define walk_in_copy 1
#endif
#endif
/* 1: when the sampled rbp cannot start a frame-pointer chain, start it at the first frame
 * record found in the stack copy (scan_fp_seed). */
const volatile __u32 fp_seed_scan = 0;

/* Bumped by the loader after every change of `targets` (it invalidates `verdicts`). */
volatile __u64 targets_gen = 0;

/* Target processes: tgid in the agent's pid namespace -> what to read of them. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, struct cpu_sampler_target);
} targets SEC(".maps");

/* max_entries (bytes) is set by the loader before load. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 1 << 22);
} events SEC(".maps");

#ifdef CPU_SAMPLER_BENCH
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, CPU_SAMPLER_STAGE_NUM);
  __type(key, __u32);
  __type(value, __u64);
} stage_ns SEC(".maps");
#endif

#define PAGE_SIZE_ 4096ULL
#define MAX_PIDNS_LEVEL 8 /* nesting depth searched by the fallback below */

/* Per-CPU state and the record being built: see cpu_sampler_percpu_head. Only the record's used
 * bytes are copied to the ring buffer. A ring buffer record reserved at full size would touch
 * ~10 KiB of ring memory that has not been used since the ring last wrapped (cold in cache and TLB)
 * at every sample; the scratch area is reused by every sample of its CPU and stays hot. */
struct scratch_record {
  struct cpu_sampler_percpu_head head;
  struct cpu_sample_record h;
  /* The stack copy, then (at the next multiple of 8) kernel ips and user ips (and one spare slot
   * for the verifier: the walk's masked index could reach it). */
  __u8 data[CPU_SAMPLER_MAX_USER_STACK_COPY + (2 * CPU_SAMPLER_MAX_FRAMES + 1) * sizeof(__u64)];
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct scratch_record);
} scratch SEC(".maps");

/* This CPU's scratch value; set at the start of every run that may count (never NULL there). */
static __always_inline struct scratch_record *this_cpu_scratch(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline void count(__u32 idx) {
  struct scratch_record *sc = this_cpu_scratch();
  if (sc && idx < CPU_SAMPLER_CNT_NUM) sc->head.counters[idx] += 1;
}

/* Adds the time since *t to stage `idx` and restarts *t (only with the stage_timing knob). */
static __always_inline void stage(__u32 idx, __u64 *t) {
#ifdef CPU_SAMPLER_BENCH
  if (!stage_timing) return;
  __u64 now = bpf_ktime_get_ns();
  __u64 *v = bpf_map_lookup_elem(&stage_ns, &idx);
  if (v) *v += now - *t;
  *t = now;
#endif
}

/* pid number of `pid` in the pid namespace with inode `ino`, or 0 if it is not visible there. */
static __always_inline __u32 pid_nr_in_ns(struct pid *pid, __u64 ino) {
  unsigned int level = BPF_CORE_READ(pid, level);
  for (int i = 0; i < MAX_PIDNS_LEVEL; i++) {
    if (i > level) break;
    struct upid upid;
    if (bpf_core_read(&upid, sizeof(upid), &pid->numbers[i])) return 0;
    if (BPF_CORE_READ(upid.ns, ns.inum) == ino) return upid.nr;
  }
  return 0;
}

/* Resolves the current thread's tgid/tid in the agent's pid namespace. The helper only answers
 * for threads whose own namespace is the agent's; threads of nested namespaces (containers
 * started by the agent's namespace, `unshare --pid`) are resolved by walking struct pid. */
static __always_inline int current_ns_ids(__u32 *tgid, __u32 *tid) {
  struct bpf_pidns_info ns = {};
  if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)) == 0) {
    *tgid = ns.tgid;
    *tid = ns.pid;
    return 0;
  }
  struct task_struct *task = current_task();
  struct pid *thread_pid = BPF_CORE_READ(task, thread_pid);
  struct pid *leader_pid = BPF_CORE_READ(task, group_leader, thread_pid);
  if (!thread_pid || !leader_pid) return -1;
  *tgid = pid_nr_in_ns(leader_pid, pidns_ino);
  if (*tgid == 0) return -1;
  *tid = pid_nr_in_ns(thread_pid, pidns_ino);
  if (*tid == 0) return -1;
  count(CPU_SAMPLER_CNT_PIDNS_FALLBACK);
  return 0;
}

/* Copies up to `want` bytes of user memory at `sp` to `dst`. A copy that runs into an unmapped
 * page (top of the main thread's stack) is retried with shorter lengths ending at page
 * boundaries. Returns the number of bytes copied. */
static __always_inline __u32 copy_user_stack(__u8 *dst, __u64 sp, __u32 want) {
  if (want == 0 || sp == 0) return 0;
  if (bpf_probe_read_user(dst, want, (const void *)sp) == 0) return want;
  __u64 page_rem = PAGE_SIZE_ - (sp & (PAGE_SIZE_ - 1));
  for (int k = CPU_SAMPLER_MAX_USER_STACK_COPY / PAGE_SIZE_; k >= 0; k--) {
    __u64 len = page_rem + (__u64)k * PAGE_SIZE_;
    if (len >= want) continue;
    /* len < want <= the copy's size, which older verifiers (5.10's) do not conclude from a
     * comparison of two unknown values and then reject the read; opaque to the compiler, which
     * would drop the check. */
    asm volatile("" : "+r"(len));
    if (len > CPU_SAMPLER_MAX_USER_STACK_COPY) continue;
    if (bpf_probe_read_user(dst, len, (const void *)sp) == 0) return len;
  }
  return 0;
}

/* Lowest address a frame can live at (vm.mmap_min_addr's default): a chain that ends with a
 * null frame pointer (Go's goexit, _start) stops here without reading page 0. A read that
 * faults costs the sampled thread far more than a whole walk on this machine kind. */
#define MIN_FRAME_ADDR 65536ULL
#define MAX_USER_ADDR 0x00007ffffffff000ULL

/* Reads the frame record at `fp` ([fp] = caller's fp, [fp+8] = return address): from the stack
 * copy (`copy`, `copied` bytes of user memory from `sp`) when it lies inside and `in_copy`, else
 * from user memory. 0 on success. */
static __always_inline int read_frame(__u64 fp, const __u8 *copy, __u64 sp, __u32 copied,
                                      int in_copy, __u64 *next_fp, __u64 *ret) {
  if (in_copy && fp >= sp && fp - sp + 16 <= copied) {
    __u64 off = (fp - sp) & (CPU_SAMPLER_MAX_USER_STACK_COPY - 1);
    *next_fp = *(const __u64 *)(copy + off);
    *ret = *(const __u64 *)(copy + off + 8);
    return 0;
  }
  __u64 frame[2];
  if (bpf_probe_read_user(frame, sizeof(frame), (const void *)fp)) return -1;
  *next_fp = frame[0];
  *ret = frame[1];
  return 0;
}

struct fp_walk {
  __u64 *out;
  const __u8 *copy;
  __u64 sp;
  __u64 fp;
  __u32 copied;
  __u32 max;
  __u32 n;
};

/* One step of the walk: frame i + 1. */
static __always_inline long fp_walk_step(__u64 i, struct fp_walk *w) {
  __u32 idx = (__u32)i + 1;
  if (idx >= w->max || idx >= CPU_SAMPLER_MAX_FRAMES) return 1;
  __u64 fp = w->fp;
  if (fp < MIN_FRAME_ADDR || fp > MAX_USER_ADDR || (fp & 7)) return 1;
  __u64 next_fp = 0, ret = 0;
  if (read_frame(fp, w->copy, w->sp, w->copied, walk_in_copy, &next_fp, &ret)) return 1;
  if (ret == 0) return 1;
  /* The compiler knows idx < 127 and would drop a plain mask; the verifier needs it. */
  asm volatile("" : "+r"(idx));
  w->out[idx & 127] = ret;
  w->n = idx + 1;
  w->fp = next_fp;
  return 0;
}

#ifndef CPU_SAMPLER_COMPAT
/* bpf_loop callback: the step is verified once, not once per frame. */
static long fp_walk_cb(__u64 i, void *data) { return fp_walk_step(i, data); }
#endif

/* Frame-pointer walk of the user stack from (ip, bp): out[0] = ip, then the return address of
 * each frame. Frames inside the stack copy (`copy`, `copied` bytes of user memory from `sp`) are
 * read from it; others (another stack, past the copy's end) from user memory. Stops at a frame
 * pointer that cannot be a user stack address, a failed read, a zero return address, or `max`
 * entries. Returns the number of entries. */
static __always_inline __u32 walk_user_fp(__u64 *out, __u64 ip, __u64 fp, __u32 max,
                                          const __u8 *copy, __u64 sp, __u32 copied) {
  out[0] = ip;
  struct fp_walk w = {
      .out = out, .copy = copy, .sp = sp, .fp = fp, .copied = copied, .max = max, .n = 1};
#ifndef CPU_SAMPLER_COMPAT
  bpf_loop(CPU_SAMPLER_MAX_FRAMES - 1, fp_walk_cb, &w, 0);
#else
  /* Without bpf_loop (5.17) the verifier walks every iteration (walk_in_copy is off there). */
  for (int i = 0; i < CPU_SAMPLER_MAX_FRAMES - 1; i++) {
    if (fp_walk_step(i, &w)) break;
  }
#endif
  return w.n;
}

/* A frame's caller frame pointer: null (the chain's end) or a user stack address. */
static __always_inline int plausible_next_fp(__u64 fp) {
  return fp == 0 || (fp >= MIN_FRAME_ADDR && fp <= MAX_USER_ADDR && !(fp & 7));
}

static __always_inline int plausible_ret(__u64 ret) {
  return ret >= MIN_FRAME_ADDR && ret <= MAX_USER_ADDR;
}

/* Whether `fp` can start a frame-pointer chain: it is a user stack address whose frame record
 * holds a plausible caller frame pointer and return address. Reads as walk_user_fp does. */
static __always_inline int fp_starts_chain(__u64 fp, const __u8 *copy, __u64 sp, __u32 copied) {
  if (fp < MIN_FRAME_ADDR || fp > MAX_USER_ADDR || (fp & 7)) return 0;
  __u64 next_fp = 0, ret = 0;
  if (read_frame(fp, copy, sp, copied, 1, &next_fp, &ret)) return 0;
  return plausible_next_fp(next_fp) && plausible_ret(ret);
}

#define FP_SEED_MAX_SPAN (16ULL << 20) /* largest distance from a frame record to its caller's */
/* Slots scanned: the first 4 KiB of the copy. */
#define FP_SEED_SCAN_SLOTS 512

struct seed_scan {
  const __u8 *copy;
  __u64 sp;
  __u32 copied;
  __u64 found;
};

#ifndef CPU_SAMPLER_COMPAT
/* bpf_loop callback (the loop is verified once, not once per path into it): slot i. */
static long seed_scan_slot(__u64 i, void *data) {
  struct seed_scan *c = data;
  __u32 off = (__u32)i * 8;
  if (off + 16 > c->copied) return 1;
  off &= CPU_SAMPLER_MAX_USER_STACK_COPY - 1;
  __u64 v = *(const __u64 *)(c->copy + off);
  __u64 r = *(const __u64 *)(c->copy + off + 8);
  __u64 a = c->sp + off;
  if (v <= a || v - a > FP_SEED_MAX_SPAN || (v & 7)) return 0;
  if (!plausible_ret(r) || (r >= c->sp && r - c->sp <= FP_SEED_MAX_SPAN)) return 0;
  c->found = a;
  return 1;
}
#endif

/* The address of the first frame record in the first 4 KiB of the stack copy (`copied` bytes of
 * user memory from `sp`), lowest first: a slot holding an 8-aligned address above itself (the
 * caller's frame pointer, within FP_SEED_MAX_SPAN) followed by a plausible return address that
 * is not itself an address in that span of the stack. 0: none. The frames of a function that
 * clobbers rbp still hold the records their prologues saved (Go's assembler adds the prologue to
 * every function with a frame), so the first record is usually the sampled function's own. */
static __always_inline __u64 scan_fp_seed(const __u8 *copy, __u64 sp, __u32 copied) {
#ifdef CPU_SAMPLER_COMPAT
  return 0; /* bpf_loop: 5.17 */
#else
  struct seed_scan c = {.copy = copy, .sp = sp, .copied = copied, .found = 0};
  bpf_loop(FP_SEED_SCAN_SLOTS, seed_scan_slot, &c, 0);
  return c.found;
#endif
}

/* Per target thread. */
struct thread_state {
  __u64 next_ns;  /* tick clock: sum_exec_runtime at which the next sample is due */
  __u64 gen;      /* tick_gen that schedule belongs to */
  __u64 stack_lo; /* the memory mapping the thread's stack was last found in */
  __u64 stack_hi;
  __u64 start_time; /* compat: the thread's start time (a reused tid starts afresh) */
};

#ifndef CPU_SAMPLER_COMPAT
/* Freed with the thread. */
struct {
  __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct thread_state);
} thread_states SEC(".maps");

/* The state of `task` (the current thread), created on first use; NULL when none can be had. */
static __always_inline struct thread_state *thread_state_of(struct task_struct *task) {
  return bpf_task_storage_get(&thread_states, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}
#else
/* Without task storage (5.11): keyed by host tid, least recently used evicted. An evicted
 * thread's next tick starts a new schedule, as after a new window. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, struct thread_state);
} thread_states SEC(".maps");

static __always_inline struct thread_state *thread_state_of(struct task_struct *task) {
  __u32 tid = BPF_CORE_READ(task, pid);
  __u64 start = BPF_CORE_READ(task, start_time);
  struct thread_state *ts = bpf_map_lookup_elem(&thread_states, &tid);
  if (ts && ts->start_time == start) return ts;
  struct thread_state fresh = {.start_time = start};
  if (bpf_map_update_elem(&thread_states, &tid, &fresh, BPF_ANY)) return 0;
  return bpf_map_lookup_elem(&thread_states, &tid);
}
#endif

#ifndef CPU_SAMPLER_COMPAT
struct vma_end_ctx {
  __u64 start;
  __u64 end;
};

static long vma_end_cb(struct task_struct *task, struct vm_area_struct *vma, void *data) {
  ((struct vma_end_ctx *)data)->start = BPF_CORE_READ(vma, vm_start);
  ((struct vma_end_ctx *)data)->end = BPF_CORE_READ(vma, vm_end);
  return 0;
}
#endif

/* The Go g a thread runs, when its stack holds the sampled sp. */
struct go_g {
  __u64 g;  /* 0: none (not a Go thread, or sp is on no stack of its g) */
  __u64 hi; /* g.stack.hi */
  __u64 m;  /* g.m */
};

/* Reads the g in the thread's TLS slot at fs_base-8 (where Go keeps it on linux/amd64): its
 * first words, stack.lo, stack.hi and m, in one read. Accepted only if stack.lo <= sp < stack.hi
 * (a goroutine, g0 or gsignal stack: the g is the one running). */
static __always_inline void read_go_g(struct task_struct *task, __u64 sp, struct go_g *out) {
  if (sp == 0) return;
  __u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
  __u64 g = 0;
  __u64 w[CPU_SAMPLER_GO_G_M / 8 + 1] = {};
  if (fsbase > 8 && bpf_probe_read_user(&g, sizeof(g), (const void *)(fsbase - 8)) == 0 &&
      g != 0 && bpf_probe_read_user(w, sizeof(w), (const void *)g) == 0 && w[0] <= sp &&
      sp < w[1] && w[1] - w[0] <= (1ULL << 30)) {
    out->g = g;
    out->hi = w[1];
    out->m = w[CPU_SAMPLER_GO_G_M / 8];
  }
}

/* The label set of the goroutine the thread runs: g.m.curg.labels (as Go's own profiler takes
 * it: on g0 or gsignal, curg is the goroutine they serve), or 0. */
static __always_inline __u64 go_labels_of(const struct go_g *gg,
                                          const struct cpu_sampler_target *tgt) {
  __u64 curg = 0, labels = 0;
  if (gg->m == 0 ||
      bpf_probe_read_user(&curg, sizeof(curg), (const void *)(gg->m + tgt->go_m_curg)) ||
      curg == 0 ||
      bpf_probe_read_user(&labels, sizeof(labels), (const void *)(curg + tgt->go_g_labels)))
    return 0;
  return labels;
}

/* The end (exclusive) of the stack holding `sp`, or 0 if unknown:
 *  - a Go thread running on a goroutine or g0 stack: g.stack.hi (`gg`, read_go_g);
 *  - otherwise the end of the VMA holding sp (main thread: [stack]; pthreads: their mapping). */
static __always_inline __u64 stack_end(struct task_struct *task, __u64 sp, const struct go_g *gg) {
  if ((copy_bound & CPU_SAMPLER_BOUND_GO_G) && gg->g != 0) {
    count(CPU_SAMPLER_CNT_COPY_BOUND_GO);
    return gg->hi;
  }
#ifndef CPU_SAMPLER_COMPAT /* bpf_find_vma: 5.17 */
  if (copy_bound & CPU_SAMPLER_BOUND_VMA) {
    /* bpf_find_vma defers its mmap_lock unlock to an irq_work (a self-interrupt, ~15 us in a
     * VM) when called with interrupts off, as here: the mapping is looked up once per thread
     * and stack, then remembered. A stale range (the mapping changed) costs at most a copy that
     * faults at the real end and is retried shorter. */
    struct thread_state *ts = thread_state_of(task);
    if (ts && ts->stack_lo <= sp && sp < ts->stack_hi) {
      count(CPU_SAMPLER_CNT_COPY_BOUND_VMA);
      return ts->stack_hi;
    }
    struct vma_end_ctx c = {};
    if (bpf_find_vma(task, sp, vma_end_cb, &c, 0) == 0 && c.end > sp) {
      count(CPU_SAMPLER_CNT_COPY_BOUND_VMA);
      count(CPU_SAMPLER_CNT_VMA_LOOKUPS);
      if (ts) {
        ts->stack_lo = c.start;
        ts->stack_hi = c.end;
      }
      return c.end;
    }
  }
#endif
  return 0;
}

/* Copies the user stack from `sp` up to its end (when known) or `max` bytes. */
static __always_inline __u32 copy_bounded(__u8 *dst, struct task_struct *task, __u64 sp,
                                          __u32 max, const struct go_g *gg) {
  if (max == 0 || sp == 0) return 0;
  __u64 end = copy_bound ? stack_end(task, sp, gg) : 0;
  if (end == 0) return copy_user_stack(dst, sp, max);
  __u64 len = (end - sp + 7) & ~7ULL;
  if (len > max) len = max;
  len &= (CPU_SAMPLER_MAX_USER_STACK_COPY * 2 - 1);
  if (len == 0 || len > max) return 0;
  if (bpf_probe_read_user(dst, len, (const void *)sp) == 0) return len;
  return copy_user_stack(dst, sp, len);
}

/* Resolves the current thread against the target set: 0 and the thread's tgid and tid in the agent's pid
 * namespace when it belongs to a target process, else -1. */
static __always_inline int filter_current(struct scratch_record *sc, __u32 *tgid, __u32 *tid,
                                          struct cpu_sampler_target *tgt) {
  if (verdict_cache) {
    struct cpu_sampler_percpu_head *v = &sc->head;
    struct task_struct *task = current_task();
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u64 start_time = BPF_CORE_READ(task, start_time);
    /* Read before `targets`: a change of the map after this read makes the verdict stale. */
    __u64 gen = targets_gen;
    if (v->verdict_pid_tgid == pid_tgid && v->verdict_start_time == start_time &&
        v->verdict_gen == gen) {
      if (v->verdict_tgid == 0) return -1;
      *tgid = v->verdict_tgid;
      *tid = v->verdict_tid;
      *tgt = v->verdict_target;
      return 0;
    }
    __u32 g = 0, t = 0;
    struct cpu_sampler_target *found = 0;
    if (current_ns_ids(&g, &t) == 0) found = bpf_map_lookup_elem(&targets, &g);
    v->verdict_pid_tgid = pid_tgid;
    v->verdict_start_time = start_time;
    v->verdict_gen = gen;
    if (!found) {
      v->verdict_tgid = v->verdict_tid = 0;
      return -1;
    }
    v->verdict_tgid = g;
    v->verdict_tid = t;
    v->verdict_target = *found;
    *tgid = g;
    *tid = t;
    *tgt = *found;
    return 0;
  }
  if (current_ns_ids(tgid, tid)) return -1;
  struct cpu_sampler_target *found = bpf_map_lookup_elem(&targets, tgid);
  if (!found) return -1;
  *tgt = *found;
  return 0;
}

/* The return addresses active uretprobes hid behind their trampoline (cpu_sample_record). The
 * kernel keeps them per thread in utask->return_instances, newest first; a "chained" instance (a
 * probed function tail-called by another) shares the stack slot, and the address, of the next
 * one, so it is skipped. */
static __always_inline void read_uret_returns(struct cpu_sample_record *rec) {
  struct task_struct *task = current_task();
  struct uprobe_task *ut = BPF_CORE_READ(task, utask);
  if (!ut) return;
  struct return_instance *ri = BPF_CORE_READ(ut, return_instances);
  if (!ri) return;
  rec->uret_trampoline = BPF_CORE_READ(task, mm, uprobes_state.xol_area, vaddr);
  __u32 n = 0;
  for (int i = 0; i < 2 * CPU_SAMPLER_MAX_URET && ri && n < CPU_SAMPLER_MAX_URET; i++) {
    if (!BPF_CORE_READ(ri, chained)) {
      rec->uret_returns[n & (CPU_SAMPLER_MAX_URET - 1)] = BPF_CORE_READ(ri, orig_ret_vaddr);
      n++;
    }
    ri = BPF_CORE_READ(ri, next);
  }
  rec->uret_nr = n;
}

/* Completes the record whose header fields up to the user registers and flags are set (kernel
 * stack taken when `want_kstack`), and submits it. */
static __always_inline void capture_and_submit(void *ctx, struct scratch_record *sc,
                                               const struct cpu_sampler_target *tgt,
                                               int want_kstack, __u64 *t) {
  struct cpu_sample_record *rec = &sc->h;
  read_uret_returns(rec);
  rec->ips_offset = 0;
  rec->user_stack_len = 0;
  stage(CPU_SAMPLER_STAGE_REGS_KSTACK, t);
  /* The running Go g: the end of its stack bounds the copy; its goroutine's labels. */
  struct go_g gg = {};
  const int labels = tgt->go_g_labels != 0 && tgt->go_m_curg != 0;
  if ((copy_bound & CPU_SAMPLER_BOUND_GO_G) || labels)
    read_go_g(current_task(), rec->user_sp, &gg);
  rec->go_labels = labels ? go_labels_of(&gg, tgt) : 0;
  /* The stack copy first: the frame-pointer walk then reads the frames it holds from it. */
  __u32 copy_bytes = user_stack_copy_bytes;
  if (copy_bytes > CPU_SAMPLER_MAX_USER_STACK_COPY) copy_bytes = CPU_SAMPLER_MAX_USER_STACK_COPY;
  __u32 copied = 0;
  if (copy_bytes) {
    copied = copy_bounded(sc->data, current_task(), rec->user_sp, copy_bytes, &gg);
    if (copied == 0) count(CPU_SAMPLER_CNT_USER_STACK_COPY_ERRORS);
  }
  if (copied > CPU_SAMPLER_MAX_USER_STACK_COPY) copied = CPU_SAMPLER_MAX_USER_STACK_COPY;
  rec->user_stack_len = copied;
  stage(CPU_SAMPLER_STAGE_COPY, t);

  /* Kernel ips, then user ips, after the copy's full region: a load-time constant, so the
   * verifier sees fixed offsets (a copy shorter than the region leaves stale bytes between). */
  const __u32 ips_off = (copy_bytes + 7) & ~7u;
  rec->ips_offset = ips_off;
  __u64 *ips = (__u64 *)(sc->data + ips_off);
  __u32 knr = 0;
  if (want_kstack) {
    long n = bpf_get_stack(ctx, ips, CPU_SAMPLER_MAX_FRAMES * sizeof(__u64), 0);
    if (n < 0) {
      rec->flags |= CPU_SAMPLE_F_KERNEL_STACK_ERR;
      count(CPU_SAMPLER_CNT_KERNEL_STACK_ERRORS);
    } else {
      knr = (__u64)n / sizeof(__u64);
    }
  }
  if (knr > CPU_SAMPLER_MAX_FRAMES) knr = CPU_SAMPLER_MAX_FRAMES;
  rec->kernel_nr = knr;
  stage(CPU_SAMPLER_STAGE_REGS_KSTACK, t);

  __u64 unr = 0;
  if (user_fp_walk) {
    __u32 max_frames = user_fp_walk;
    if (max_frames > CPU_SAMPLER_MAX_FRAMES) max_frames = CPU_SAMPLER_MAX_FRAMES;
    if (own_fp_walk) {
      if (rec->user_ip != 0) {
        /* The copy's length is reloaded from memory: the walk's bounds checks make the verifier
         * track whatever they compare precisely, and `copied` is a different constant on each of
         * copy_bounded's paths, which would multiply the walk's states by them. */
        __u32 walk_copied = *(volatile __u32 *)&rec->user_stack_len;
        __u64 fp = rec->user_bp;
        if (fp_seed_scan && walk_copied >= 16 &&
            !fp_starts_chain(fp, sc->data, rec->user_sp, walk_copied)) {
          __u64 seed = scan_fp_seed(sc->data, rec->user_sp, walk_copied);
          if (seed != 0) {
            fp = seed;
            rec->flags |= CPU_SAMPLE_F_FP_SCANNED;
          }
        }
        unr = walk_user_fp(&ips[knr], rec->user_ip, fp, max_frames, sc->data, rec->user_sp,
                           walk_copied);
      }
    } else {
      long n = bpf_get_stack(ctx, &ips[knr], max_frames * sizeof(__u64), BPF_F_USER_STACK);
      if (n < 0) {
        rec->flags |= CPU_SAMPLE_F_USER_STACK_ERR;
        count(CPU_SAMPLER_CNT_USER_STACK_ERRORS);
      } else {
        unr = (__u64)n / sizeof(__u64);
      }
    }
  }
  /* Opaque to the compiler, which would otherwise drop the clamp the verifier needs. */
  asm volatile("" : "+r"(unr));
  if (unr > CPU_SAMPLER_MAX_FRAMES) unr = CPU_SAMPLER_MAX_FRAMES;
  rec->user_nr = unr;
  stage(CPU_SAMPLER_STAGE_USER_FP, t);

  __u64 flags = 0;
  if (wakeup_bytes) {
    flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
                                                                          : BPF_RB_NO_WAKEUP;
  }
  __u64 len = sizeof(struct cpu_sample_record) + ips_off + (__u64)(knr + unr) * sizeof(__u64);
  if (len > sizeof(*sc) - sizeof(sc->head)) len = sizeof(*sc) - sizeof(sc->head);
  if (bpf_ringbuf_output(&events, rec, len, flags))
    sc->head.counters[CPU_SAMPLER_CNT_DROPPED_RINGBUF_FULL] += 1;
  stage(CPU_SAMPLER_STAGE_SUBMIT, t);
}

/* Sets the header fields every record starts with. */
static __always_inline void begin_record(struct scratch_record *sc, __u32 tgid, __u32 tid,
                                         __u32 weight) {
  struct cpu_sample_record *rec = &sc->h;
  rec->time_ns = bpf_ktime_get_ns();
  rec->pid = tgid;
  rec->tid = tid;
  rec->cpu = bpf_get_smp_processor_id();
  rec->flags = 0;
  rec->weight = weight;
  rec->uret_nr = 0;
  rec->uret_trampoline = 0;
}

#ifdef CPU_SAMPLER_COMPAT
/* x86-64 without KASAN: the kernel stack of a task, whose top holds the user registers saved at
 * its entry to the kernel (task_pt_regs). */
#define KERNEL_THREAD_SIZE (16384ULL)
#endif

/* The user registers saved at the top of `task`'s kernel stack at its entry to the kernel. */
static __always_inline struct pt_regs *user_regs_of(struct task_struct *task) {
#ifdef CPU_SAMPLER_COMPAT
  /* bpf_task_pt_regs: 5.15. The computed location is checked: its cs must be user mode. */
  __u64 top = (__u64)BPF_CORE_READ(task, stack) + KERNEL_THREAD_SIZE;
  struct pt_regs *uregs = (struct pt_regs *)(top - bpf_core_type_size(struct pt_regs));
  if ((BPF_CORE_READ(uregs, cs) & 3) != 3) return 0;
  return uregs;
#else
  return (struct pt_regs *)bpf_task_pt_regs(task);
#endif
}

/* The user registers saved at the current thread's entry to the kernel. */
static __always_inline void saved_user_regs(struct cpu_sample_record *rec) {
  struct pt_regs *uregs = user_regs_of(current_task());
  if (!uregs) {
    rec->flags |= CPU_SAMPLE_F_USER_REGS_ERR;
    return;
  }
  rec->user_ip = BPF_CORE_READ(uregs, ip);
  rec->user_sp = BPF_CORE_READ(uregs, sp);
  rec->user_bp = BPF_CORE_READ(uregs, bp);
  if (rec->user_sp == 0) rec->flags |= CPU_SAMPLE_F_USER_REGS_ERR;
}

/* perf clock: one sample per period of the CPU's cpu-clock event (its own hrtimer interrupt)
 * that interrupted a target thread. */
SEC("perf_event")
int cpu_sample(struct bpf_perf_event_data *ctx) {
  if (null_program) return 0;
  __u64 t = stage_timing ? bpf_ktime_get_ns() : 0;
  struct scratch_record *sc = this_cpu_scratch();
  if (!sc) return 0;
  __u32 tgid = 0, tid = 0;
  struct cpu_sampler_target tgt = {};
  if (filter_current(sc, &tgid, &tid, &tgt)) return 0;
  sc->head.counters[CPU_SAMPLER_CNT_SAMPLES_SEEN] += 1;
  stage(CPU_SAMPLER_STAGE_FILTER, &t);
  stage(CPU_SAMPLER_STAGE_RESERVE, &t);
  begin_record(sc, tgid, tid, 1);
  struct cpu_sample_record *rec = &sc->h;
  /* User registers: from the interrupted context when it was user mode, else the registers
   * saved at kernel entry. */
  /* x86-64: user code runs only in the lower canonical half, the kernel in the upper one (the
   * ctx only allows 8-byte loads of pt_regs, so the 2-byte cs is not readable here). */
  int in_kernel = (__s64)ctx->regs.ip < 0;
  if (!in_kernel) {
    rec->user_ip = ctx->regs.ip;
    rec->user_sp = ctx->regs.sp;
    rec->user_bp = ctx->regs.bp;
  } else {
    rec->flags |= CPU_SAMPLE_F_IN_KERNEL;
    saved_user_regs(rec);
  }
  capture_and_submit(ctx, sc, &tgt, in_kernel, &t);
  return 0;
}

/* Set by the loader at every start; a new tick_gen restarts every thread's schedule. The tick
 * program stays attached between profile windows (detaching waits for RCU grace periods: ~70 ms
 * here) and does nothing while tick_enabled is 0. */
volatile __u64 tick_period_ns = 0;
volatile __u64 tick_gen = 0;
volatile __u32 tick_enabled = 0;

/* The tick's hrtimer function (tick_sched_timer, tick_nohz_handler in newer kernels), learned by
 * the loader from the expirations recorded in `tick_learn` while `learn_tgid` is set: then every
 * expiration is recorded instead of sampled. */
volatile __u64 tick_fn = 0;
volatile __u32 learn_tgid = 0; /* the loader's tgid in its pid namespace */

struct tick_learn_buf {
  __u32 n; /* expirations recorded, the last CPU_SAMPLER_TICK_LEARN kept */
  __u32 pad;
  struct cpu_sampler_tick_obs obs[CPU_SAMPLER_TICK_LEARN];
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tick_learn_buf);
} tick_learn SEC(".maps");

/* Whether the current thread's innermost entry to the kernel was an interrupt from user mode:
 * the entry code stores ~vector (negative) in orig_ax for interrupts, the syscall number or the
 * exception's error code (non-negative) otherwise. The tick cannot nest in another hard
 * interrupt's handler, so it then interrupted user mode (or, rarely, a softirq run on the way out
 * of an interrupt from user mode). */
static __always_inline int interrupted_user_mode(void) {
  struct task_struct *task = current_task();
  struct pt_regs *uregs = user_regs_of(task);
  if (!uregs) return 0;
  return (__s64)BPF_CORE_READ(uregs, orig_ax) < 0;
}

/* Learning: records this expiration, and for the loader's own thread interrupted in user mode the
 * last frame of the kernel stack (the return address into the interrupt entry stub). */
static __always_inline void learn_tick(void *ctx, struct hrtimer *timer, __u64 fn) {
  __u32 zero = 0;
  struct tick_learn_buf *b = bpf_map_lookup_elem(&tick_learn, &zero);
  if (!b) return;
  struct cpu_sampler_tick_obs *o = &b->obs[b->n & (CPU_SAMPLER_TICK_LEARN - 1)];
  b->n++;
  o->timer = (__u64)timer;
  o->fn = fn;
  o->expires = BPF_CORE_READ(timer, _softexpires);
  o->stub = 0;
  struct bpf_pidns_info ns = {};
  if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)) || ns.tgid != learn_tgid ||
      !interrupted_user_mode())
    return;
  struct scratch_record *sc = this_cpu_scratch();
  if (!sc) return;
  __u64 *ips = (__u64 *)sc->data;
  long n = bpf_get_stack(ctx, ips, CPU_SAMPLER_MAX_FRAMES * sizeof(__u64), 0);
  if (n >= (long)sizeof(__u64)) o->stub = ips[(n / sizeof(__u64) - 1) & 127];
}

/* Tick clock. Like the per-thread CPU timers of Go's profiler, which the kernel checks at the
 * scheduler tick, a target thread is sampled at the first tick that finds it running after its
 * CPU time (se.sum_exec_runtime, as of the previous tick or context switch) crossed the next
 * multiple of the period; its first boundary is a random point of the first period, and a sample
 * standing for k crossed periods has weight k. Ticks interrupt the running thread at times
 * unrelated to what it does, so the samples' places are unbiased; no interrupt of its own is
 * added. A tick in user mode takes no kernel stack; in kernel mode, the kernel stack starts with
 * the tick's own frames, which the reader strips up to the interrupt entry stub. */
static __always_inline int tick_sample(void *ctx) {
  __u64 t = stage_timing ? bpf_ktime_get_ns() : 0;
  struct scratch_record *sc = this_cpu_scratch();
  if (!sc) return 0;
  sc->head.counters[CPU_SAMPLER_CNT_TICKS] += 1;
  __u64 period = tick_period_ns;
  __u64 gen = tick_gen;
  if (period == 0) return 0;
  __u32 tgid = 0, tid = 0;
  struct cpu_sampler_target tgt = {};
  if (filter_current(sc, &tgid, &tid, &tgt)) return 0;
  struct task_struct *task = current_task();
  __u64 runtime = BPF_CORE_READ(task, se.sum_exec_runtime);
  struct thread_state *ts = thread_state_of(task);
  if (!ts) {
    sc->head.counters[CPU_SAMPLER_CNT_TICK_STATE_ERRORS] += 1;
    return 0;
  }
  if (ts->gen != gen) {
    ts->gen = gen;
    ts->next_ns = runtime + 1 + bpf_get_prandom_u32() % period;
    return 0;
  }
  if (runtime < ts->next_ns) return 0;
  __u64 periods = (runtime - ts->next_ns) / period + 1;
  ts->next_ns += periods * period;
  if (periods > 0xffffffffULL) periods = 0xffffffffULL;
  sc->head.counters[CPU_SAMPLER_CNT_SAMPLES_SEEN] += 1;
  stage(CPU_SAMPLER_STAGE_FILTER, &t);
  stage(CPU_SAMPLER_STAGE_RESERVE, &t);
  begin_record(sc, tgid, tid, (__u32)periods);
  /* The user registers saved at the top of the thread's kernel stack: the interrupt's own when it
   * came from user mode. */
  saved_user_regs(&sc->h);
  int user_tick = interrupted_user_mode();
  if (!user_tick) sc->h.flags |= CPU_SAMPLE_F_IN_KERNEL | CPU_SAMPLE_F_TICK;
  capture_and_submit(ctx, sc, &tgt, !user_tick, &t);
  return 0;
}

/* Every hrtimer expiration, the tick's among them (with high-resolution timers the tick is an
 * hrtimer of each CPU), as a BTF-typed tracepoint: attached by BTF id, without tracefs or
 * /proc/kallsyms. */
SEC("tp_btf/hrtimer_expire_entry")
int BPF_PROG(cpu_tick, struct hrtimer *timer, ktime_t *now) {
  if (!tick_enabled || null_program) return 0;
  __u64 fn = (__u64)BPF_CORE_READ(timer, function);
  if (learn_tgid) {
    learn_tick(ctx, timer, fn);
    return 0;
  }
  if (fn != tick_fn) return 0;
  return tick_sample(ctx);
}
