// The C side of heap_cgo (see main.go): built by cgo with the package's CFLAGS (no frame
// pointers).
#include <stdlib.h>

#include "_cgo_export.h"

#define MAX_KEPT (1 << 20)
static void *kept[MAX_KEPT];
static size_t nkept;
static unsigned long long counts[6];  // big, small, cb: allocated and live bytes
static volatile int outer_calls;

static int keep(void *p) {
  if (nkept == MAX_KEPT) return 0;
  kept[nkept++] = p;
  return 1;
}

// n blocks of `size` bytes from malloc (or calloc), every other one kept live; counts[site*2]
// gets the bytes allocated, counts[site*2+1] the bytes kept.
static inline void fill(int n, size_t size, int use_calloc, int site) {
  for (int i = 0; i < n; i++) {
    char *p = use_calloc ? calloc(1, size) : malloc(size);
    if (p == NULL) continue;
    p[0] = 1;
    counts[site * 2] += size;
    if ((i & 1) == 0 && keep(p)) {
      counts[site * 2 + 1] += size;
    } else {
      free(p);
    }
  }
}

__attribute__((noinline)) void c_big_fill(int n) { fill(n, 3072, 0, 0); }

__attribute__((noinline)) void c_small_fill(int n) { fill(n, 1024, 1, 1); }

__attribute__((noinline)) void c_cb_fill(int n) { fill(n, 2048, 0, 2); }

// C calling back into Go (main.goAlloc), which calls C again (c_cb_fill).
__attribute__((noinline)) void c_outer(int n) {
  goAlloc(n);
  outer_calls++;
}

unsigned long long c_count(int i) { return i >= 0 && i < 6 ? counts[i] : 0; }
