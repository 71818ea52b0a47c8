// C test target for native symbolization: distinct non-inlined functions with real bodies.
#include <stdio.h>
#include <stdlib.h>

int global_counter = 7;  // a data object, looked up with ElfFile::FindSymbol

__attribute__((noinline)) long c_leaf_work(long n) {
  long acc = 0;
  for (long i = 0; i < n; i++) acc += (i * 2654435761u) ^ (acc >> 3);
  return acc;
}

__attribute__((noinline)) static long c_static_helper(long n) { return c_leaf_work(n) + 1; }

__attribute__((noinline)) long c_middle(long n) { return c_static_helper(n) * 3; }

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000;
  printf("%ld %d\n", c_middle(n), global_counter);
  return 0;
}
