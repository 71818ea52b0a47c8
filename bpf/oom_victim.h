/* Types shared by the OOM-victim program (oom_victim.bpf.c) and its loader
 * (agent/sampler/oom_victim_watch.cc). Plain C with fixed-width kernel types so that both sides
 * agree on the layout byte for byte. In BPF, vmlinux.h provides __u32 & co; elsewhere they come
 * from <linux/types.h>. */
#ifndef PPROF_SIDECAR_BPF_OOM_VICTIM_H_
#define PPROF_SIDECAR_BPF_OOM_VICTIM_H_

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Deepest pid-namespace nesting searched for the agent's namespace (levels 0..N-1). */
#define OOM_VICTIM_MAX_NS_LEVELS 8

/* One process chosen by the kernel as an OOM victim (it has been sent SIGKILL). */
struct oom_victim_event {
  __u32 host_tgid; /* in the initial pid namespace */
  __u32 ns_tgid;   /* in the agent's pid namespace; 0: not visible there */
  __u64 start_boottime_ns; /* the victim's (thread group leader's) start, CLOCK_BOOTTIME ns */
  __u64 event_boottime_ns; /* when the kernel marked it, CLOCK_BOOTTIME ns */
  char comm[16];
};

#endif /* PPROF_SIDECAR_BPF_OOM_VICTIM_H_ */
