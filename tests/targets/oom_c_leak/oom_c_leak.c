// OOM test target: leaks heap in leak_cache_entry() at a steady rate (argv[1] MiB/s, default 16)
// until the kernel OOM-kills it; transient_work() allocates and frees a little alongside. Every
// byte leaked is written, so it is resident and charged to the memory cgroup. Prints "ready".
// `oom_c_leak osc LOW HIGH`: instead holds LOW MiB, then HIGH MiB, then LOW again, switching
// every 50 ms (chunks above glibc's mmap threshold: freeing them returns the memory).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { kChunk = 256 << 10 };

static void** kept;
static size_t nkept, cap;

__attribute__((noinline)) void* leak_cache_entry(size_t n) {
  void* p = malloc(n);
  memset(p, 0xab, n);
  if (nkept == cap) {
    cap = cap ? 2 * cap : 1024;
    kept = realloc(kept, cap * sizeof(*kept));
  }
  kept[nkept++] = p;
  return p;
}

__attribute__((noinline)) void transient_work(void) {
  char* p = malloc(64 << 10);
  memset(p, 1, 64 << 10);
  free(p);
}

static void oscillate(int low_mib, int high_mib) {
  const size_t low = (size_t)low_mib * (1 << 20) / kChunk,
               high = (size_t)high_mib * (1 << 20) / kChunk;
  struct timespec period = {0, 50 * 1000 * 1000};
  printf("ready\n");
  fflush(stdout);
  for (size_t i = 0;; ++i) {
    const size_t want = i % 2 ? high : low;
    while (nkept < want) leak_cache_entry(kChunk);
    while (nkept > want) free(kept[--nkept]);
    nanosleep(&period, NULL);
  }
}

int main(int argc, char** argv) {
  if (argc > 3 && strcmp(argv[1], "osc") == 0) oscillate(atoi(argv[2]), atoi(argv[3]));
  const double mib_per_s = argc > 1 ? atof(argv[1]) : 16;
  const double chunks_per_s = mib_per_s * (1 << 20) / kChunk;
  struct timespec start, now, tick = {0, 5 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  printf("ready\n");
  fflush(stdout);
  double done = 0;
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    const double t = (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
    for (; done < t * chunks_per_s; done += 1) leak_cache_entry(kChunk);
    transient_work();
    nanosleep(&tick, NULL);
  }
}
