// unwind_c burns CPU with a known split for unwinding tests: hot_path does 3 units of work for
// every 1 unit of cold_path, both through the same leaf (mix), a few frames below main. Built
// with -O2 -fomit-frame-pointer its callers are only recoverable from CFI.
// Usage: unwind_c SECONDS
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile uint64_t sink;

// Keeps a stack frame with locals so that the leaf's CFA differs from its entry sp.
__attribute__((noinline)) uint64_t mix(uint64_t x, int rounds) {
  volatile uint64_t scratch[8];
  for (int i = 0; i < rounds; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    scratch[i & 7] = x;
  }
  return x + scratch[3];
}

// The "+ 1" after each call keeps them from becoming tail calls (which would drop the frame).
__attribute__((noinline)) uint64_t hot_path(uint64_t x) { return mix(x, 3 * 200000) + 1; }
__attribute__((noinline)) uint64_t cold_path(uint64_t x) { return mix(x + 1, 200000) + 1; }

__attribute__((noinline)) uint64_t work_loop(uint64_t x, double seconds) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    x = hot_path(x);
    x = cold_path(x);
    sink += x;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (seconds > 0 &&
        (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 > seconds) {
      break;
    }
  }
  return x;
}

int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 0;
  uint64_t x = work_loop((uint64_t)time(NULL), seconds);
  printf("%llu\n", (unsigned long long)(x & 1));
  return 0;
}
