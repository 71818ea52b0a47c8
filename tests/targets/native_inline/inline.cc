// C++ target for the DWARF symbolizer test: an always_inline member function inlined into a
// method, in a namespace. The test finds lines by the LINE: marker comments.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace demo {

class Hasher {
 public:
  static inline __attribute__((always_inline)) long Mix(long x) {  // LINE:mix_decl
    long y = x * 2654435761L;  // LINE:mix_body
    y ^= y >> 13;              // LINE:mix_body2
    return y * 31 + (y >> 7);  // LINE:mix_ret
  }  // LINE:mix_end

  __attribute__((noinline)) long Run(long n);
};

long Hasher::Run(long n) {  // LINE:run_decl
  long acc = 0;
  for (long i = 0; i < n; i++) {
    acc += Mix(i + acc);  // LINE:run_call_mix
  }
  return acc;
}

template <typename T>
__attribute__((noinline)) T Sum(const std::vector<T>& v) {  // LINE:sum_decl
  T s = T();
  for (const T& x : v) s += x;
  return s;
}

}  // namespace demo

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000;
  demo::Hasher h;
  std::vector<long> v = {1, 2, 3, n};
  std::printf("%ld %ld\n", h.Run(n), demo::Sum(v));  // LINE:main_call_run
  return 0;
}
