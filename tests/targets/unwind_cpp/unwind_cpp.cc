// unwind_cpp burns CPU with a known split through C++ abstractions (virtual calls,
// std::function, templates): HotTask does 3 units of work for every 1 unit of ColdTask. Built
// with -O2 -fomit-frame-pointer its callers are only recoverable from CFI.
// Usage: unwind_cpp SECONDS
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

namespace unwind_cpp {

volatile uint64_t sink;

template <int kShift>
__attribute__((noinline)) uint64_t Mix(uint64_t x, int rounds) {
  volatile uint64_t scratch[8];
  for (int i = 0; i < rounds; i++) {
    x ^= x << kShift;
    x ^= x >> 7;
    x ^= x << 17;
    scratch[i & 7] = x;
  }
  return x + scratch[5];
}

class Task {
 public:
  virtual ~Task() = default;
  virtual uint64_t Run(uint64_t x) = 0;
};

class HotTask : public Task {
 public:
  __attribute__((noinline)) uint64_t Run(uint64_t x) override { return Mix<13>(x, 600000) + 1; }
};

class ColdTask : public Task {
 public:
  __attribute__((noinline)) uint64_t Run(uint64_t x) override { return Mix<13>(x, 200000) + 1; }
};

__attribute__((noinline)) uint64_t RunAll(const std::vector<std::unique_ptr<Task>>& tasks,
                                          const std::function<uint64_t(Task&, uint64_t)>& run,
                                          uint64_t x) {
  for (const auto& t : tasks) x = run(*t, x) ^ 3;
  return x;
}

}  // namespace unwind_cpp

int main(int argc, char** argv) {
  using namespace unwind_cpp;
  const double seconds = argc > 1 ? atof(argv[1]) : 0;
  std::vector<std::unique_ptr<Task>> tasks;
  tasks.push_back(std::make_unique<HotTask>());
  tasks.push_back(std::make_unique<ColdTask>());
  std::function<uint64_t(Task&, uint64_t)> run = [](Task& t, uint64_t x) { return t.Run(x) + 1; };
  const auto start = std::chrono::steady_clock::now();
  uint64_t x = static_cast<uint64_t>(start.time_since_epoch().count());
  for (;;) {
    x = RunAll(tasks, run, x);
    sink += x;
    std::chrono::duration<double> d = std::chrono::steady_clock::now() - start;
    if (seconds > 0 && d.count() > seconds) break;
  }
  printf("%llu\n", static_cast<unsigned long long>(x & 1));
  return 0;
}
