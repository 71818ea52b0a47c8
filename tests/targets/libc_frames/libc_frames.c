/* CPU-burning target whose time goes mostly to glibc: formatting and parsing floating-point
 * numbers (snprintf "%.17g" -> __printf_fp, strtod -> ____strtod_l_internal) and sorting them
 * (qsort -> msort with a comparator called back from libc). Its samples land in libc functions
 * whose DWARF (libc6-dbg, found by build id) has file:line and inlined frames.
 *
 *   libc_frames <seconds>      (0: until killed). Prints "ready <pid>" once started.
 * Build with -O2 -g -fno-omit-frame-pointer. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define N 2048

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

__attribute__((noinline)) double format_and_parse(double* v, int n) {
  char buf[64];
  double sum = 0;
  for (int i = 0; i < n; i++) {
    snprintf(buf, sizeof(buf), "%.17g", v[i] * 1.000001 + i);
    sum += strtod(buf, NULL);
  }
  return sum;
}

__attribute__((noinline)) void sort_values(double* v, int n) { qsort(v, n, sizeof(double), cmp_double); }

int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 0;
  static double v[N];
  unsigned seed = 12345;
  for (int i = 0; i < N; i++) v[i] = (double)rand_r(&seed) / 7.0;
  printf("ready %d\n", (int)getpid());
  fflush(stdout);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  volatile double sink = 0;
  for (;;) {
    sink += format_and_parse(v, N);
    sort_values(v, N);
    for (int i = 0; i < N; i++) v[i] = v[(i * 7919) % N] + 0.5;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (seconds > 0 && (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > seconds) break;
  }
  return sink == 42;
}
