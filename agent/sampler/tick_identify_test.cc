#include "agent/sampler/tick_identify.h"

#include <gtest/gtest.h>

namespace pprof_sidecar {
namespace {

constexpr int64_t kTick = 4000000;  // HZ=250
constexpr uint64_t kTickFn = 0xffffffff81443000, kSleepFn = 0xffffffff81420000,
                   kPerfFn = 0xffffffff81300000;

// `n` expirations of one timer from `start`, `step` apart.
void Add(std::vector<HrtimerExpiration>* cpu, uint64_t timer, uint64_t fn, int64_t start,
         int64_t step, int n, uint64_t stub = 0) {
  for (int i = 0; i < n; ++i) cpu->push_back({timer, fn, start + i * step, stub});
}

TEST(IdentifyTickTest, PicksTheTimerOnTheTickGridAmongOthers) {
  std::vector<std::vector<HrtimerExpiration>> cpus(2);
  Add(&cpus[0], 0x1000, kTickFn, 1000 * kTick, kTick, 10, /*stub=*/0xffffffff82001234);
  Add(&cpus[0], 0x2000, kSleepFn, 1000 * kTick + 123457, 2500000, 6);  // a 2.5 ms sleeper
  Add(&cpus[0], 0x3000, kPerfFn, 777, 10000000, 4);                   // perf at 100 Hz, off grid
  Add(&cpus[1], 0x1100, kTickFn, 1000 * kTick, 2 * kTick, 2);         // idle CPU: two ticks
  auto id = IdentifyTick(cpus, kTick);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->fn, kTickFn);
  EXPECT_EQ(id->stub, 0xffffffff82001234u);
}

TEST(IdentifyTickTest, SkippedTicksOfABusyCpuStillQualify) {
  std::vector<std::vector<HrtimerExpiration>> cpus(1);
  for (int64_t k : {0, 1, 3, 4, 7}) cpus[0].push_back({0x1000, kTickFn, (500 + k) * kTick, 0});
  auto id = IdentifyTick(cpus, kTick);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->fn, kTickFn);
  EXPECT_EQ(id->stub, 0u);
}

TEST(IdentifyTickTest, NoBusyCpuIsNotFound) {
  std::vector<std::vector<HrtimerExpiration>> cpus(2);
  Add(&cpus[0], 0x1000, kTickFn, 0, kTick, 2);
  Add(&cpus[1], 0x2000, kSleepFn, 5, 1000000 + 3, 20);
  EXPECT_TRUE(absl::IsNotFound(IdentifyTick(cpus, kTick).status()));
}

TEST(IdentifyTickTest, TwoPeriodicTimersAtHzAreAmbiguous) {
  std::vector<std::vector<HrtimerExpiration>> cpus(1);
  Add(&cpus[0], 0x1000, kTickFn, 0, kTick, 5);
  Add(&cpus[0], 0x3000, kPerfFn, 40 * kTick, kTick, 5);  // perf at exactly HZ, on the grid
  auto id = IdentifyTick(cpus, kTick);
  EXPECT_TRUE(absl::IsFailedPrecondition(id.status())) << id.status();
}

TEST(IdentifyTickTest, ATimerOffTheGridDoesNotQualify) {
  std::vector<std::vector<HrtimerExpiration>> cpus(1);
  Add(&cpus[0], 0x3000, kPerfFn, 0, kTick + 1, 30);
  EXPECT_TRUE(absl::IsNotFound(IdentifyTick(cpus, kTick).status()));
}

}  // namespace
}  // namespace pprof_sidecar
