// C++ test target for native symbolization: namespaced functions, templates, member functions.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace sym_test {
namespace inner {

__attribute__((noinline)) long SpinWork(long n) {
  long acc = 0;
  for (long i = 0; i < n; i++) acc += (i * 2654435761u) ^ (acc >> 3);
  return acc;
}

template <typename T>
__attribute__((noinline)) T Accumulate(const std::vector<T>& v) {
  T sum{};
  for (const T& x : v) sum += x + static_cast<T>(SpinWork(3));
  return sum;
}

class Worker {
 public:
  __attribute__((noinline)) long Run(int rounds) const {
    long total = 0;
    for (int i = 0; i < rounds; i++) total += SpinWork(100 + i);
    return total;
  }
};

}  // namespace inner
}  // namespace sym_test

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 10;
  std::vector<long> vl = {1, 2, 3};
  std::vector<double> vd = {1.5, 2.5};
  sym_test::inner::Worker w;
  std::printf("%ld %ld %f\n", w.Run(rounds), sym_test::inner::Accumulate(vl),
              sym_test::inner::Accumulate(vd));
  return 0;
}
