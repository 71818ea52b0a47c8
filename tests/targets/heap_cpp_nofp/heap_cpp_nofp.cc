// Malloc test target in C++ built without frame pointers (-O2 -fomit-frame-pointer): every
// allocation goes through libstdc++'s operator new (which calls malloc). make_order allocates 3
// bytes (std::make_unique of a 3000-byte object) for every byte make_index allocates (a vector
// of 250 ints), both called from serve, which keeps one round in 4 live (in static arrays: no
// allocation of its own) and frees the others. Commands on stdin, one per line:
//   alloc N   N rounds; prints "done order_bytes index_bytes live_order_bytes live_index_bytes"
//   quit
// Prints "ready PID" first.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace {

struct Order {
  char payload[3000];
};

unsigned long long order_bytes = 0, index_bytes = 0, live_order_bytes = 0, live_index_bytes = 0;

constexpr size_t kMaxKept = 1 << 16;
std::unique_ptr<Order> kept_orders[kMaxKept];
std::vector<int> kept_index[kMaxKept];
size_t kept = 0;

}  // namespace

__attribute__((noinline)) std::unique_ptr<Order> make_order(int i) {
  auto o = std::make_unique<Order>();
  snprintf(o->payload, 16, "order-%d", i);
  order_bytes += sizeof(Order);
  return o;
}

__attribute__((noinline)) std::vector<int> make_index(int n) {
  index_bytes += n * sizeof(int);
  return std::vector<int>(n, 1);
}

__attribute__((noinline)) void serve(long rounds) {
  for (long i = 0; i < rounds; i++) {
    std::unique_ptr<Order> o = make_order(static_cast<int>(i));
    std::vector<int> v = make_index(250);
    if (o->payload[0] == 'x' && v[3] == 7) puts("?");
    if (i % 4 == 0 && kept < kMaxKept) {
      live_order_bytes += sizeof(Order);
      live_index_bytes += v.size() * sizeof(int);
      kept_orders[kept] = std::move(o);
      kept_index[kept++] = std::move(v);
    }
  }
}

int main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  printf("ready %d\n", static_cast<int>(getpid()));
  char line[256];
  while (fgets(line, sizeof(line), stdin)) {
    long n = 0;
    if (sscanf(line, "alloc %ld", &n) == 1) {
      serve(n);
      printf("done %llu %llu %llu %llu\n", order_bytes, index_bytes, live_order_bytes,
             live_index_bytes);
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  return 0;
}
