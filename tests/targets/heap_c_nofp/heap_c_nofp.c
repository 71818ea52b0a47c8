/* Malloc test target built without frame pointers (-O2 -fomit-frame-pointer), whose allocations
 * all go through allocation wrappers (xmalloc, xcalloc), as in servers with their own zmalloc:
 * cache_fill allocates 3 bytes through xmalloc for every byte index_build allocates through
 * xcalloc, both called from dispatch. Only unwinding with CFI finds the callers of the wrappers.
 * Commands on stdin, one per line:
 *   alloc N   N rounds (each frees what it allocated); prints "done fill_bytes index_bytes"
 *             (cumulative bytes requested under each function)
 *   quit
 * Prints "ready PID" first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile unsigned char sink;
static unsigned long long fill_bytes, index_bytes;

__attribute__((noinline)) void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (p == NULL) abort();
  return p;
}

__attribute__((noinline)) void *xcalloc(size_t m, size_t n) {
  void *p = calloc(m, n);
  if (p == NULL) abort();
  return p;
}

/* A frame with locals between the wrapper and the caller's caller, as real code has. */
__attribute__((noinline)) void *cache_fill(size_t n, int salt) {
  char key[96];
  snprintf(key, sizeof(key), "entry-%d", salt);
  unsigned char *p = xmalloc(n);
  memcpy(p, key, 16);
  fill_bytes += n;
  return p;
}

__attribute__((noinline)) void *index_build(size_t n) {
  unsigned char *p = xcalloc(1, n);
  sink = p[n - 1];
  index_bytes += n;
  return p;
}

__attribute__((noinline)) void dispatch(long rounds) {
  for (long i = 0; i < rounds; i++) {
    void *a = cache_fill(3000, (int)i);
    void *b = index_build(1000);
    sink = ((unsigned char *)a)[0];
    free(a);
    free(b);
  }
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", (int)getpid());
  char line[256];
  while (fgets(line, sizeof(line), stdin)) {
    long n = 0;
    if (sscanf(line, "alloc %ld", &n) == 1) {
      dispatch(n);
      printf("done %llu %llu\n", fill_bytes, index_bytes);
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  return 0;
}
