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

/* Return addresses recorded per sample that uretprobes replaced on the stack (see
 * cpu_sample_record.uret_returns). */
#define CPU_SAMPLER_MAX_URET 4

/* Upper bound of the user stack copy in each record. The actual bound is the rodata knob
 * `user_stack_copy_bytes` (0..CPU_SAMPLER_MAX_USER_STACK_COPY, a multiple of 8). */
#define CPU_SAMPLER_MAX_USER_STACK_COPY 16384

/* Bits of the rodata knob `copy_bound`: how the stack copy finds the end of the stack, so that
 * only the bytes between the stack pointer and the stack's end are copied. */
#define CPU_SAMPLER_BOUND_VMA 0x1u  /* end of the VMA holding sp (bpf_find_vma) */
#define CPU_SAMPLER_BOUND_GO_G 0x2u /* Go: g.stack.hi of the running g (TLS at fs_base-8) */

/* Offset of m in runtime.g (Go 1.19..1.27, amd64): the program reads the g's first words, its
 * stack bounds and m, in one read. */
#define CPU_SAMPLER_GO_G_M 48

/* Value of the `targets` map: what the program reads of a target process besides its stacks. */
struct cpu_sampler_target {
  /* Go targets whose samples carry the running goroutine's labels (g.m.curg.labels): byte
   * offsets of curg in runtime.m and of labels in runtime.g of the target's release. 0: none. */
  __u16 go_m_curg;
  __u16 go_g_labels;
  __u32 pad;
};

/* cpu_sample_record.flags */
#define CPU_SAMPLE_F_IN_KERNEL 0x1u        /* the sample interrupted kernel mode */
#define CPU_SAMPLE_F_USER_STACK_ERR 0x2u   /* bpf_get_stack(BPF_F_USER_STACK) failed */
#define CPU_SAMPLE_F_KERNEL_STACK_ERR 0x4u /* bpf_get_stack(kernel) failed */
#define CPU_SAMPLE_F_USER_REGS_ERR 0x8u    /* user registers could not be read */
/* Taken at the scheduler tick in kernel mode: the kernel stack starts with the tick's own frames,
 * up to the interrupt entry stub, which the reader strips. */
#define CPU_SAMPLE_F_TICK 0x10u
/* The frame-pointer walk did not start at the sampled rbp, which cannot be a frame pointer (code
 * using rbp as a general register, e.g. Go <= 1.20's crypto assembly), but at the first
 * (saved frame pointer, return address) pair found in the stack copy: the first user ips after
 * the sampled ip may skip frames, and only a consumer that can match them against frames it
 * unwound itself should use them. */
#define CPU_SAMPLE_F_FP_SCANNED 0x20u

/* One ring buffer record: this header, then `user_stack_len` bytes of the user stack starting at
 * `user_sp`, then, `ips_offset` (a multiple of 8, >= user_stack_len) bytes after the end of the
 * header, `kernel_nr` kernel ips and `user_nr` user ips (each leaf first; the first user ip is the
 * interrupted user ip). Bytes between the stack and the ips are undefined. */
struct cpu_sample_record {
  __u64 time_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
  __u64 user_ip;
  __u64 user_sp;
  __u64 user_bp;
  __u32 pid; /* tgid in the agent's pid namespace */
  __u32 tid; /* thread id in the agent's pid namespace */
  __u32 cpu;
  __u32 flags;           /* CPU_SAMPLE_F_* */
  __u32 kernel_nr;       /* kernel ips following the header, <= CPU_SAMPLER_MAX_FRAMES */
  __u32 user_nr;         /* user ips following them, <= CPU_SAMPLER_MAX_FRAMES */
  __u32 user_stack_len;  /* bytes of stack following the header */
  __u32 ips_offset;      /* where the ips start, in bytes from the end of the header */
  /* Sampling periods this sample stands for: 1, except at the tick when the thread's CPU time
   * crossed more than one period boundary since its last sample (it ran between ticks, or the
   * period is shorter than the tick). */
  __u32 weight;
  __u32 uret_nr; /* valid entries of uret_returns */
  /* Return probes (uretprobes, e.g. the agent's own malloc sampler) replace the return address
   * of each probed call on the user stack by a trampoline in the process's uprobe XOL page
   * (`uret_trampoline`, 0 if none) until the call returns. The real return addresses, innermost
   * first, one per trampoline on the stack, from the kernel's list for the thread: unwinders put
   * them back in order. */
  __u64 uret_trampoline;
  __u64 uret_returns[CPU_SAMPLER_MAX_URET];
  /* Go targets with label offsets (cpu_sampler_target): the runtime address of the label set of
   * the goroutine the thread runs (g.m.curg.labels, g from the thread's TLS at fs_base-8 when its
   * stack holds the sampled sp); 0: none. */
  __u64 go_labels;
};

/* Hrtimer expirations recorded per CPU while the loader learns which is the tick (a power of 2). */
#define CPU_SAMPLER_TICK_LEARN 512

/* One hrtimer expiration seen while learning. */
struct cpu_sampler_tick_obs {
  __u64 timer;   /* the hrtimer's address */
  __u64 fn;      /* its function */
  __s64 expires; /* its (soft) expiry time, ns of CLOCK_MONOTONIC */
  /* For the loader's own thread interrupted in user mode: the kernel stack's last frame (the
   * return address into the interrupt entry stub); else 0. */
  __u64 stub;
};

/* Indices of the per-CPU `counters` array. */
enum cpu_sampler_counter {
  CPU_SAMPLER_CNT_SAMPLES_SEEN = 0,      /* program runs on a target thread */
  CPU_SAMPLER_CNT_DROPPED_RINGBUF_FULL,  /* bpf_ringbuf_output failed: ring buffer full */
  CPU_SAMPLER_CNT_USER_STACK_ERRORS,
  CPU_SAMPLER_CNT_KERNEL_STACK_ERRORS,
  CPU_SAMPLER_CNT_USER_STACK_COPY_ERRORS, /* no byte of the user stack could be copied */
  CPU_SAMPLER_CNT_PIDNS_FALLBACK,         /* pid resolved by walking struct pid (nested ns) */
  CPU_SAMPLER_CNT_COPY_BOUND_GO,          /* stack copy bounded by the Go g's stack.hi */
  CPU_SAMPLER_CNT_COPY_BOUND_VMA,         /* stack copy bounded by the stack VMA's end */
  CPU_SAMPLER_CNT_TICK_STATE_ERRORS,      /* tick: no per-thread state (task storage full) */
  CPU_SAMPLER_CNT_VMA_LOOKUPS,            /* bpf_find_vma calls (stack mapping not remembered) */
  CPU_SAMPLER_CNT_TICKS,                  /* tick clock: ticks seen while enabled (any thread) */
  CPU_SAMPLER_CNT_NUM,
};

/* The start of each CPU's `scratch` value (the rest is the record being built): the filter's
 * verdict cache and the counters, in the page the record's header is written to, so that a sample
 * touches as few distinct pages as possible (each costs a TLB miss on machines whose kernel
 * entries flush the TLB). The loader sums `counters` over CPUs. */
struct cpu_sampler_percpu_head {
  /* The filter's verdict for the thread this CPU last sampled (rodata knob verdict_cache). */
  __u64 verdict_pid_tgid;   /* host pid/tgid (bpf_get_current_pid_tgid) */
  __u64 verdict_start_time; /* task start time: with the host pid, unique since boot */
  __u64 verdict_gen;        /* the loader's targets_gen the verdict was computed under */
  __u32 verdict_tgid;       /* in the agent's pid namespace; 0: not a target */
  __u32 verdict_tid;
  struct cpu_sampler_target verdict_target; /* the target's `targets` value */
  __u64 counters[CPU_SAMPLER_CNT_NUM];
};

/* Indices of the per-CPU `stage_ns` array (benchmarks: the stage_timing knob). */
enum cpu_sampler_stage {
  CPU_SAMPLER_STAGE_FILTER = 0, /* pid namespace + target lookup (kept samples only) */
  CPU_SAMPLER_STAGE_RESERVE,    /* scratch record lookup */
  CPU_SAMPLER_STAGE_REGS_KSTACK, /* user registers, kernel stack */
  CPU_SAMPLER_STAGE_USER_FP,    /* frame-pointer walk of the user stack */
  CPU_SAMPLER_STAGE_COPY,       /* the Go g (stack end, label pointer), user stack copy */
  CPU_SAMPLER_STAGE_SUBMIT,     /* ring buffer output (and wakeup) */
  CPU_SAMPLER_STAGE_NUM,
};

#endif /* PPROF_SIDECAR_BPF_CPU_SAMPLER_H_ */
