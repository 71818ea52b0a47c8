// C target for the DWARF symbolizer test: an always_inline helper inlined into a caller.
// The test finds lines by the LINE: marker comments, so edit freely but keep the markers.
#include <stdio.h>
#include <stdlib.h>

static inline __attribute__((always_inline)) long mix(long x) {  // LINE:mix_decl
  long y = x * 2654435761L;  // LINE:mix_body
  y ^= y >> 13;              // LINE:mix_body2
  return y * 31 + (y >> 7);  // LINE:mix_ret
}  // LINE:mix_end

__attribute__((noinline)) long outer(long n) {  // LINE:outer_decl
  long acc = 0;
  for (long i = 0; i < n; i++) {
    acc += mix(i + acc);  // LINE:outer_call_mix
  }
  return acc;
}

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000;
  printf("%ld\n", outer(n));  // LINE:main_call_outer
  return 0;
}
