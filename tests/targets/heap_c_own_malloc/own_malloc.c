/* Linked into heap_c_split to make an executable that defines its own allocator entry points,
 * as one statically linking tcmalloc/jemalloc does: every malloc/free of the program (and of
 * libc, by symbol interposition) lands here first. They forward to glibc's implementation
 * (__libc_*), which the agent also probes: those inner calls must not be counted twice. */
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

void *malloc(size_t n) { return __libc_malloc(n); }
void *calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
void *memalign(size_t align, size_t n) { return __libc_memalign(align, n); }
void *aligned_alloc(size_t align, size_t n) { return __libc_memalign(align, n); }
void free(void *p) { __libc_free(p); }
