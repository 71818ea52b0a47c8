// SPDX-License-Identifier: GPL-2.0
/* OOM-victim events: one record per process the kernel's OOM killer chooses, submitted as it is
 * marked (after SIGKILL is sent, before its memory is reaped), with its pid in the agent's pid
 * namespace so that the agent can tell whether it is the target.
 *
 * Two entry points, one loaded: tp_btf/mark_victim where the tracepoint passes the victim's
 * task_struct (Linux 6.8 and later), else fentry/mark_oom_victim (its argument is the task on
 * every kernel since the tracepoint existed). Neither needs tracefs: tp_btf and fentry attach
 * through bpf_link. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "bpf/oom_victim.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader: the inode number of the agent's pid namespace (/proc/self/ns/pid). */
const volatile __u32 agent_pidns_inum = 0;

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 4096 * 4);
} events SEC(".maps");

__u64 dropped = 0; /* records that did not fit in the ring buffer */

/* The victim's thread-group id in the agent's pid namespace, 0 if it is not visible there. */
static __always_inline __u32 pid_in_agent_ns(struct task_struct *leader) {
  struct pid *p = BPF_CORE_READ(leader, thread_pid);
  unsigned int level = BPF_CORE_READ(p, level);
  for (int i = 0; i < OOM_VICTIM_MAX_NS_LEVELS; i++) {
    if ((unsigned int)i > level) break;
    struct upid up = {};
    bpf_core_read(&up, sizeof(up), &p->numbers[i]);
    if (BPF_CORE_READ(up.ns, ns.inum) == agent_pidns_inum) return (__u32)up.nr;
  }
  return 0;
}

static __always_inline int emit(struct task_struct *task) {
  struct task_struct *leader = BPF_CORE_READ(task, group_leader);
  struct oom_victim_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    __sync_fetch_and_add(&dropped, 1);
    return 0;
  }
  e->host_tgid = BPF_CORE_READ(task, tgid);
  e->ns_tgid = pid_in_agent_ns(leader);
  e->start_boottime_ns = BPF_CORE_READ(leader, start_boottime);
  e->event_boottime_ns = bpf_ktime_get_boot_ns();
  BPF_CORE_READ_STR_INTO(&e->comm, leader, comm);
  bpf_ringbuf_submit(e, 0); /* wake the reader now: the victim is about to exit */
  return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(on_mark_victim, struct task_struct *task) { return emit(task); }

SEC("fentry/mark_oom_victim")
int BPF_PROG(on_mark_oom_victim, struct task_struct *task) { return emit(task); }
