/* Types shared by the CPU sampling BPF program (cpu_sampler.bpf.c) and its user-space loader
 * (agent/sampler/bpf_cpu_sampler.cc). Plain C with fixed-width kernel types so that both sides
 * agree on the layout byte for byte. In BPF, vmlinux.h provides __u32 & co; elsewhere they come
 * from <linux/types.h>. */
#ifndef PPROF_SIDECAR_BPF_CPU_SAMPLER_H_
#define PPROF_SIDECAR_BPF_CPU_SAMPLER_H_

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Frames kept per stack (kernel and user each); bpf_get_stack writes at most this many. */
#define CPU_SAMPLER_MAX_FRAMES 127

/* Upper bound of the user stack copy that follows each record. The actual size is the rodata
 * knob `user_stack_copy_bytes` (0..CPU_SAMPLER_MAX_USER_STACK_COPY, a multiple of 8). */
#define CPU_SAMPLER_MAX_USER_STACK_COPY 16384

/* cpu_sample_record.flags */
#define CPU_SAMPLE_F_IN_KERNEL 0x1u        /* the sample interrupted kernel mode */
#define CPU_SAMPLE_F_USER_STACK_ERR 0x2u   /* bpf_get_stack(BPF_F_USER_STACK) failed */
#define CPU_SAMPLE_F_KERNEL_STACK_ERR 0x4u /* bpf_get_stack(kernel) failed */
#define CPU_SAMPLE_F_USER_REGS_ERR 0x8u    /* user registers could not be read */

/* One ring buffer record. Stacks are leaf first; user_ips[0] is the interrupted user ip. It is
 * followed immediately (at offset sizeof(struct cpu_sample_record)) by the stack copy area of
 * `user_stack_copy_bytes` bytes (the knob), of which the first `user_stack_len` hold the user
 * stack memory starting at `user_sp`. */
struct cpu_sample_record {
  __u64 time_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
  __u64 user_ip;
  __u64 user_sp;
  __u64 user_bp;
  __u32 pid; /* tgid in the agent's pid namespace */
  __u32 tid; /* thread id in the agent's pid namespace */
  __u32 cpu;
  __u32 flags;           /* CPU_SAMPLE_F_* */
  __u32 kernel_nr;       /* valid entries of kernel_ips */
  __u32 user_nr;         /* valid entries of user_ips */
  __u32 user_stack_len;  /* bytes of stack copied after the record */
  __u32 reserved;
  __u64 kernel_ips[CPU_SAMPLER_MAX_FRAMES];
  __u64 user_ips[CPU_SAMPLER_MAX_FRAMES];
};

/* Indices of the per-CPU `counters` array. */
enum cpu_sampler_counter {
  CPU_SAMPLER_CNT_SAMPLES_SEEN = 0,      /* program runs on a target thread */
  CPU_SAMPLER_CNT_DROPPED_RINGBUF_FULL,  /* bpf_ringbuf_reserve failed */
  CPU_SAMPLER_CNT_USER_STACK_ERRORS,
  CPU_SAMPLER_CNT_KERNEL_STACK_ERRORS,
  CPU_SAMPLER_CNT_USER_STACK_COPY_ERRORS, /* no byte of the user stack could be copied */
  CPU_SAMPLER_CNT_PIDNS_FALLBACK,         /* pid resolved by walking struct pid (nested ns) */
  CPU_SAMPLER_CNT_NUM,
};

#endif /* PPROF_SIDECAR_BPF_CPU_SAMPLER_H_ */
