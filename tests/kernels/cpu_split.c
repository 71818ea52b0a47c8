/* CPU target of the kernel-matrix VM (tests/kernels/init.sh) that measures its own truth.
 *
 *   cpu_split THREADS
 *
 * Each thread alternates spin_hot (nominally 75 % of its CPU time) and spin_cold (25 %) in chunks
 * of 150 ms / 50 ms of thread CPU time times a random factor in [0.25, 1.75) drawn per cycle (no
 * phase-locking with a sampling clock). A chunk overshoots its nominal length by up to an inner
 * loop, slow under emulation, or by the time the vCPU was preempted when the guest does not
 * account steal time (the thread's CPU clock jumps; long chunks make such a jump rarely end one),
 * so the target accounts the thread CPU time each function really ran. Every SIGUSR1 prints
 * "truth HOT_NS COLD_NS": each function's CPU time so far over all threads, the chunks in progress
 * included (read through the threads' CPU clocks); the difference of two readings is the split of
 * the time between them. Runs until killed. Build with -O0 -fno-omit-frame-pointer -pthread. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { HOT, COLD };

/* Per worker: CPU time completed in each function, and the function and thread-CPU start of the
 * chunk in progress, under a sequence count (odd while the worker updates them). */
struct account {
  clockid_t clock;
  uint32_t seq;
  uint32_t fn;
  uint64_t chunk_start;
  uint64_t done[2];
};

static struct account accounts[64];
static int nthreads;

static uint64_t clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t thread_cpu_ns(void) { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

/* Closes the chunk in progress at `now` and opens one of `fn`. */
static void switch_to(struct account *a, uint32_t fn, uint64_t now) {
  __atomic_store_n(&a->seq, a->seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  a->done[a->fn] += now - a->chunk_start;
  a->fn = fn;
  a->chunk_start = now;
  __atomic_store_n(&a->seq, a->seq + 1, __ATOMIC_RELEASE);
}

/* Burns CPU until this thread's CPU clock reaches `until`; returns the clock. */
__attribute__((noinline)) uint64_t spin_hot(struct account *a, uint64_t now, uint64_t until) {
  volatile unsigned long x = 0;
  switch_to(a, HOT, now);
  while (now < until) {
    for (int i = 0; i < 2000; i++) x += i;
    now = thread_cpu_ns();
  }
  return now;
}

__attribute__((noinline)) uint64_t spin_cold(struct account *a, uint64_t now, uint64_t until) {
  volatile unsigned long x = 0;
  switch_to(a, COLD, now);
  while (now < until) {
    for (int i = 0; i < 2000; i++) x ^= i;
    now = thread_cpu_ns();
  }
  return now;
}

__attribute__((noinline)) void *worker(void *arg) {
  struct account *a = arg;
  unsigned seed = (unsigned)(a - accounts) ^ (unsigned)getpid();
  uint64_t t = thread_cpu_ns();
  a->chunk_start = t;
  for (;;) {
    double f = 0.25 + 1.5 * (rand_r(&seed) / ((double)RAND_MAX + 1));
    t = spin_hot(a, t, t + (uint64_t)(150e6 * f));
    t = spin_cold(a, t, t + (uint64_t)(50e6 * f));
  }
  return NULL;
}

/* Each function's CPU time so far over all workers, the chunks in progress included. */
static void totals(uint64_t out[2]) {
  out[HOT] = out[COLD] = 0;
  for (int i = 0; i < nthreads; i++) {
    struct account *a = &accounts[i];
    uint32_t seq, fn;
    uint64_t done[2], start, now;
    do {
      seq = __atomic_load_n(&a->seq, __ATOMIC_ACQUIRE);
      fn = a->fn;
      start = a->chunk_start;
      done[HOT] = a->done[HOT];
      done[COLD] = a->done[COLD];
      now = clock_ns(a->clock);
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
    } while ((seq & 1) || seq != __atomic_load_n(&a->seq, __ATOMIC_RELAXED));
    done[fn] += now > start ? now - start : 0;
    out[HOT] += done[HOT];
    out[COLD] += done[COLD];
  }
}

int main(int argc, char **argv) {
  nthreads = argc > 1 ? atoi(argv[1]) : 0;
  if (nthreads < 1 || nthreads > 64) {
    fprintf(stderr, "usage: cpu_split THREADS\n");
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the workers: only sigwait takes it */
  for (int i = 0; i < nthreads; i++) {
    pthread_t tid;
    accounts[i].fn = HOT;
    if (pthread_create(&tid, NULL, worker, &accounts[i]) != 0) return 1;
    if (pthread_getcpuclockid(tid, &accounts[i].clock) != 0) return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0) return 1;
    uint64_t t[2];
    totals(t);
    printf("truth %llu %llu\n", (unsigned long long)t[HOT], (unsigned long long)t[COLD]);
  }
}
