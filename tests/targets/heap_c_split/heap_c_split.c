/* Malloc test target: site big_site allocates 3 bytes for every byte small_site allocates
 * (malloc of `big` bytes vs calloc(1, big / 3)), keeps one iteration in `keep_every` live and
 * frees the rest, and reports its own truth. Driven by commands on stdin, one per line:
 *   alloc N   run N iterations; prints "done big_bytes small_bytes live_big live_small"
 *             (cumulative bytes allocated per site, bytes currently live per site)
 *   free      frees everything kept; prints "freed"
 *   valloc N  N blocks of `big` bytes from valloc_site (valloc) and N from pvalloc_site (pvalloc),
 *             kept until "free"; prints "valloced BYTES" (bytes requested per site)
 *   nogrow    realloc_fail_site tries to grow every kept block to an impossible size (each
 *             realloc fails; the blocks stay as they are); prints "kept LIVE"
 *   grow      grows every kept block to twice its size, the even-numbered ones in realloc_site
 *             (realloc), the odd ones in reallocarray_site (reallocarray); prints "grown LIVE"
 *             (LIVE: bytes now live in the kept blocks)
 *   dlopen PATH  loads an allocator library (RTLD_LOCAL: it replaces nothing) and looks up its
 *             malloc and free; prints "loaded" or "error MESSAGE"
 *   late N    N blocks of `big` bytes from late_site through that library's malloc, each freed
 *             at once; prints "latedone BYTES" (bytes requested there so far)
 *   quit
 * Prints "ready PID" first. Build with -fno-omit-frame-pointer -fno-builtin so that every call
 * reaches the C library and the stacks are walkable. */
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t big = 3000, keep_every = 8;
static void **kept;
static size_t nkept, capkept;
static unsigned long long big_bytes, small_bytes, live_big, live_small;
static volatile unsigned char sink;

static size_t *kept_size; /* bytes of each kept block */

static void keep(void *p, size_t n) {
  if (nkept == capkept) {
    capkept = capkept ? capkept * 2 : 1024;
    kept = realloc(kept, capkept * sizeof(void *));
    kept_size = realloc(kept_size, capkept * sizeof(size_t));
  }
  kept_size[nkept] = n;
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
      keep(a, big);
      keep(b, big / 3);
      live_big += big;
      live_small += big / 3;
    } else {
      free(a);
      free(b);
    }
  }
}

/* Each site keeps its frame across the call (no tail call), so it is the allocation's caller. */
#define NO_TAIL_CALL(p) __asm__ volatile("" : : "r"(p) : "memory")

__attribute__((noinline)) void *valloc_site(size_t n) {
  void *p = valloc(n);
  NO_TAIL_CALL(p);
  return p;
}
__attribute__((noinline)) void *pvalloc_site(size_t n) {
  void *p = pvalloc(n);
  NO_TAIL_CALL(p);
  return p;
}
__attribute__((noinline)) void *realloc_fail_site(void *p) {
  void *q = realloc(p, (size_t)1 << 60);
  NO_TAIL_CALL(q);
  return q;
}
__attribute__((noinline)) void *realloc_site(void *p, size_t n) {
  void *q = realloc(p, n);
  NO_TAIL_CALL(q);
  return q;
}
__attribute__((noinline)) void *reallocarray_site(void *p, size_t n) {
  void *q = reallocarray(p, n / 2, 2);
  NO_TAIL_CALL(q);
  return q;
}

static void *(*lib_malloc)(size_t);
static void (*lib_free)(void *);
static unsigned long long late_bytes;

__attribute__((noinline)) void *late_site(size_t n) {
  void *p = lib_malloc(n);
  NO_TAIL_CALL(p);
  return p;
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
    } else if (strncmp(line, "valloc ", 7) == 0) {
      long n = atol(line + 7);
      for (long i = 0; i < n; i++) {
        void *a = valloc_site(big), *b = pvalloc_site(big);
        if (!a || !b) abort();
        ((unsigned char *)a)[0] = ((unsigned char *)b)[0] = 1;
        keep(a, big);
        keep(b, big);
      }
      printf("valloced %llu\n", (unsigned long long)n * big);
    } else if (strncmp(line, "nogrow", 6) == 0) {
      unsigned long long live = 0;
      for (size_t i = 0; i < nkept; i++) {
        if (realloc_fail_site(kept[i]) != NULL) abort();
        live += kept_size[i];
      }
      printf("kept %llu\n", live);
    } else if (strncmp(line, "grow", 4) == 0) {
      unsigned long long live = 0;
      for (size_t i = 0; i < nkept; i++) {
        void *q = i % 2 == 0 ? realloc_site(kept[i], 2 * kept_size[i])
                             : reallocarray_site(kept[i], 2 * kept_size[i]);
        if (!q) abort();
        kept[i] = q;
        kept_size[i] *= 2;
        live += kept_size[i];
      }
      printf("grown %llu\n", live);
    } else if (strncmp(line, "dlopen ", 7) == 0) {
      line[strcspn(line, "\n")] = 0;
      void *h = dlopen(line + 7, RTLD_NOW | RTLD_LOCAL);
      if (h) {
        lib_malloc = (void *(*)(size_t))dlsym(h, "malloc");
        lib_free = (void (*)(void *))dlsym(h, "free");
      }
      if (h && lib_malloc && lib_free) {
        printf("loaded\n");
      } else {
        printf("error %s\n", dlerror());
      }
    } else if (strncmp(line, "late ", 5) == 0) {
      long n = atol(line + 5);
      for (long i = 0; i < n && lib_malloc; i++) {
        void *p = late_site(big);
        ((volatile unsigned char *)p)[0] = 1;
        lib_free(p);
        late_bytes += big;
      }
      printf("latedone %llu\n", late_bytes);
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  return 0;
}
