/* Malloc-heavy benchmark target for bench/heap_bench.sh. Commands on stdin, one per line:
 *   run ITERS    ITERS x (malloc of a size in 16..4111 bytes, a write, free of an allocation
 *                made 64 iterations earlier); prints "RESULT wall_ns cpu_ns checksum"
 *   hold N SIZE  allocates N blocks of SIZE bytes and keeps them live; prints "HELD N"
 *   release      frees the held blocks; prints "RELEASED"
 *   quit
 * Prints "ready PID" first. Timing covers the loop only; cpu_ns is user+system time of the
 * process (getrusage), so in-process probe cost (uprobe traps, BPF) is included. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
         (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

__attribute__((noinline)) static void *alloc_site(size_t n) {
  unsigned char *p = malloc(n);
  p[0] = (unsigned char)n;
  return p;
}

__attribute__((noinline)) static uint64_t work(long iters) {
  void *ring[64] = {0};
  uint64_t x = 88172645463325252ull, sum = 0;
  for (long i = 0; i < iters; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    unsigned char *p = alloc_site(16 + (x & 4095));
    sum += p[0];
    free(ring[i & 63]);
    ring[i & 63] = p;
  }
  for (int i = 0; i < 64; i++) free(ring[i]);
  return sum;
}

static void **held;
static long nheld;

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", (int)getpid());
  char line[128];
  while (fgets(line, sizeof(line), stdin)) {
    if (strncmp(line, "run ", 4) == 0) {
      long iters = atol(line + 4);
      uint64_t w0 = now_ns(), c0 = cpu_ns();
      uint64_t sum = work(iters);
      uint64_t w1 = now_ns(), c1 = cpu_ns();
      printf("RESULT %llu %llu %llu\n", (unsigned long long)(w1 - w0),
             (unsigned long long)(c1 - c0), (unsigned long long)sum);
    } else if (strncmp(line, "hold ", 5) == 0) {
      long n = 0, size = 0;
      sscanf(line + 5, "%ld %ld", &n, &size);
      held = realloc(held, (nheld + n) * sizeof(void *));
      for (long i = 0; i < n; i++) held[nheld++] = alloc_site(size);
      printf("HELD %ld\n", nheld);
    } else if (strncmp(line, "release", 7) == 0) {
      for (long i = 0; i < nheld; i++) free(held[i]);
      nheld = 0;
      printf("RELEASED\n");
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  return 0;
}
