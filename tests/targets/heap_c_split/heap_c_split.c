/* Malloc test target: site big_site allocates 3 bytes for every byte small_site allocates
 * (malloc of `big` bytes vs calloc(1, big / 3)), keeps one iteration in `keep_every` live and
 * frees the rest, and reports its own truth. Driven by commands on stdin, one per line:
 *   alloc N   run N iterations; prints "done big_bytes small_bytes live_big live_small"
 *             (cumulative bytes allocated per site, bytes currently live per site)
 *   free      frees everything kept; prints "freed"
 *   quit
 * Prints "ready PID" first. Build with -fno-omit-frame-pointer -fno-builtin so that every call
 * reaches the C library and the stacks are walkable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t big = 3000, keep_every = 8;
static void **kept;
static size_t nkept, capkept;
static unsigned long long big_bytes, small_bytes, live_big, live_small;
static volatile unsigned char sink;

static void keep(void *p) {
  if (nkept == capkept) {
    capkept = capkept ? capkept * 2 : 1024;
    kept = realloc(kept, capkept * sizeof(void *));
  }
  kept[nkept++] = p;
}

__attribute__((noinline)) void *big_site(size_t n) {
  void *p = malloc(n);
  ((unsigned char *)p)[0] = 1;
  return p;
}

__attribute__((noinline)) void *small_site(size_t n) {
  void *p = calloc(1, n);
  sink = ((unsigned char *)p)[n - 1];
  return p;
}

__attribute__((noinline)) void run(long iters) {
  for (long i = 0; i < iters; i++) {
    void *a = big_site(big);
    void *b = small_site(big / 3);
    big_bytes += big;
    small_bytes += big / 3;
    if (i % keep_every == 0) {
      keep(a);
      keep(b);
      live_big += big;
      live_small += big / 3;
    } else {
      free(a);
      free(b);
    }
  }
}

int main(int argc, char **argv) {
  if (argc > 1) big = strtoul(argv[1], NULL, 10);
  if (argc > 2) keep_every = strtoul(argv[2], NULL, 10);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", (int)getpid());
  char line[128];
  while (fgets(line, sizeof(line), stdin)) {
    if (strncmp(line, "alloc ", 6) == 0) {
      run(atol(line + 6));
      printf("done %llu %llu %llu %llu\n", big_bytes, small_bytes, live_big, live_small);
    } else if (strncmp(line, "free", 4) == 0) {
      for (size_t i = 0; i < nkept; i++) free(kept[i]);
      nkept = 0;
      live_big = live_small = 0;
      printf("freed\n");
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  return 0;
}
