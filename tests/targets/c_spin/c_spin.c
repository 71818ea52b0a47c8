/* CPU-burning test target for the BPF sampler tests.
 *
 *   c_spin <wait|nowait> <threads> <cpu_seconds_per_thread> <split|syscall>
 *
 * Starts <threads> worker threads; with "wait" they start burning only after one byte arrives
 * on stdin (so the test can install the target filter first). "split" spends 75% of each
 * thread's CPU time in spin_hot() and 25% in spin_cold(), interleaved in chunks of thread CPU
 * time of 15 ms / 5 ms times a random factor in [0.25, 1.75) drawn per cycle: fixed 20 ms cycles
 * would phase-lock with a 100 Hz sampling clock (every 2nd tick at the same point of a cycle)
 * and skew the sampled split far beyond sampling noise. "syscall" burns CPU in the kernel by reading /dev/zero. Exits when every
 * worker has used its CPU budget. Build with -O0 -fno-omit-frame-pointer. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds_per_thread;
static int syscall_mode;
static pthread_barrier_t start_barrier;

static double thread_cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Burns CPU until this thread's CPU clock reaches `until`. */
__attribute__((noinline)) void spin_hot(double until) {
  volatile unsigned long x = 0;
  while (thread_cpu_now() < until) {
    for (int i = 0; i < 20000; i++) x += i;
  }
}

__attribute__((noinline)) void spin_cold(double until) {
  volatile unsigned long x = 0;
  while (thread_cpu_now() < until) {
    for (int i = 0; i < 20000; i++) x ^= i;
  }
}

__attribute__((noinline)) void read_zero(double until) {
  static char buf[1 << 16];
  int fd = open("/dev/zero", O_RDONLY);
  if (fd < 0) abort();
  while (thread_cpu_now() < until) {
    for (int i = 0; i < 16; i++) {
      if (read(fd, buf, sizeof(buf)) < 0) abort();
    }
  }
  close(fd);
}

__attribute__((noinline)) void *worker(void *arg) {
  (void)arg;
  pthread_barrier_wait(&start_barrier);
  double t = thread_cpu_now();
  double end = t + cpu_seconds_per_thread;
  if (syscall_mode) {
    read_zero(end);
    return NULL;
  }
  unsigned seed = (unsigned)(unsigned long)pthread_self() ^ (unsigned)getpid();
  while (t < end) {
    double f = 0.25 + 1.5 * (rand_r(&seed) / ((double)RAND_MAX + 1));
    spin_hot(t + 0.015 * f);
    spin_cold(t + 0.020 * f);
    t = thread_cpu_now();
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s <wait|nowait> <threads> <cpu_seconds> <split|syscall>\n", argv[0]);
    return 2;
  }
  int wait = strcmp(argv[1], "wait") == 0;
  int threads = atoi(argv[2]);
  cpu_seconds_per_thread = atof(argv[3]);
  syscall_mode = strcmp(argv[4], "syscall") == 0;
  if (threads < 1 || threads > 64) return 2;
  pthread_t tids[64];
  pthread_barrier_init(&start_barrier, NULL, threads + 1);
  for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, NULL);
  if (wait) {
    char c;
    if (read(0, &c, 1) != 1) return 3;
  }
  pthread_barrier_wait(&start_barrier);
  for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
  return 0;
}
