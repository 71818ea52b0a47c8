// SPDX-License-Identifier: GPL-2.0
/* CPU sampling program: attached to per-CPU software cpu-clock perf events. For every sample
 * that interrupted a thread of a target process it emits one cpu_sample_record (stacks, user
 * registers, a copy of the top of the user stack) to the `events` ring buffer. Threads of other
 * processes are never recorded. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "bpf/cpu_sampler.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader between open and load. */
const volatile __u64 pidns_dev = 0; /* st_dev of /proc/self/ns/pid of the agent */
const volatile __u64 pidns_ino = 0; /* st_ino of /proc/self/ns/pid of the agent */
const volatile __u32 user_stack_copy_bytes = 0;

/* Target processes: tgid in the agent's pid namespace -> 1. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, __u8);
} targets SEC(".maps");

/* max_entries (bytes) is set by the loader before load. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, CPU_SAMPLER_CNT_NUM);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

#define PAGE_SIZE_ 4096ULL
#define MAX_PIDNS_LEVEL 8 /* nesting depth searched by the fallback below */

static __always_inline void count(__u32 idx) {
  __u64 *v = bpf_map_lookup_elem(&counters, &idx);
  if (v) *v += 1;
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
  struct task_struct *task = bpf_get_current_task_btf();
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
    if (bpf_probe_read_user(dst, len, (const void *)sp) == 0) return len;
  }
  return 0;
}

SEC("perf_event")
int cpu_sample(struct bpf_perf_event_data *ctx) {
  __u32 tgid, tid;
  if (current_ns_ids(&tgid, &tid)) return 0;
  if (!bpf_map_lookup_elem(&targets, &tgid)) return 0;
  count(CPU_SAMPLER_CNT_SAMPLES_SEEN);

  __u32 copy_bytes = user_stack_copy_bytes;
  if (copy_bytes > CPU_SAMPLER_MAX_USER_STACK_COPY) copy_bytes = CPU_SAMPLER_MAX_USER_STACK_COPY;
  struct cpu_sample_record *rec =
      bpf_ringbuf_reserve(&events, sizeof(struct cpu_sample_record) + copy_bytes, 0);
  if (!rec) {
    count(CPU_SAMPLER_CNT_DROPPED_RINGBUF_FULL);
    return 0;
  }
  rec->time_ns = bpf_ktime_get_ns();
  rec->pid = tgid;
  rec->tid = tid;
  rec->cpu = bpf_get_smp_processor_id();
  rec->flags = 0;
  rec->reserved = 0;
  rec->user_stack_len = 0;

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
    struct task_struct *task = bpf_get_current_task_btf();
    struct pt_regs *uregs = (struct pt_regs *)bpf_task_pt_regs(task);
    rec->user_ip = BPF_CORE_READ(uregs, ip);
    rec->user_sp = BPF_CORE_READ(uregs, sp);
    rec->user_bp = BPF_CORE_READ(uregs, bp);
    if (rec->user_sp == 0) rec->flags |= CPU_SAMPLE_F_USER_REGS_ERR;
  }

  rec->kernel_nr = 0;
  if (in_kernel) {
    long n = bpf_get_stack(ctx, rec->kernel_ips, sizeof(rec->kernel_ips), 0);
    if (n < 0) {
      rec->flags |= CPU_SAMPLE_F_KERNEL_STACK_ERR;
      count(CPU_SAMPLER_CNT_KERNEL_STACK_ERRORS);
    } else {
      rec->kernel_nr = n / sizeof(__u64);
    }
  }

  long n = bpf_get_stack(ctx, rec->user_ips, sizeof(rec->user_ips), BPF_F_USER_STACK);
  if (n < 0) {
    rec->user_nr = 0;
    rec->flags |= CPU_SAMPLE_F_USER_STACK_ERR;
    count(CPU_SAMPLER_CNT_USER_STACK_ERRORS);
  } else {
    rec->user_nr = n / sizeof(__u64);
  }

  if (copy_bytes) {
    rec->user_stack_len = copy_user_stack((__u8 *)(rec + 1), rec->user_sp, copy_bytes);
    if (rec->user_stack_len == 0) count(CPU_SAMPLER_CNT_USER_STACK_COPY_ERRORS);
  }

  bpf_ringbuf_submit(rec, 0);
  return 0;
}
