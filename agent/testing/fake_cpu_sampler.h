// A CpuSampler that synthesizes samples at the requested rate from a caller-provided stack, so
// the profile pipeline and HTTP handlers are tested without privileges or BPF.
#ifndef PPROF_SIDECAR_AGENT_TESTING_FAKE_CPU_SAMPLER_H_
#define PPROF_SIDECAR_AGENT_TESTING_FAKE_CPU_SAMPLER_H_

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "agent/sample/cpu_sampler_interface.h"

namespace pprof_sidecar::testing {

class FakeCpuSampler : public CpuSampler {
 public:
  // Every `weight` periods of 1/hz s emits one sample per target with `stack` as user stack (leaf
  // first) and that weight, as the tick clock does when its ticks are slower than the rate.
  explicit FakeCpuSampler(std::vector<uint64_t> stack, uint32_t weight = 1)
      : stack_(std::move(stack)), weight_(weight) {}
  ~FakeCpuSampler() override { Stop(); }

  absl::Status Start(int hz, Sink sink) override {
    if (running_) return absl::FailedPreconditionError("already started");
    running_ = true;
    thread_ = std::thread([this, hz, sink] {
      while (running_) {
        std::this_thread::sleep_for(std::chrono::microseconds(1000000LL * weight_ / hz));
        std::vector<uint32_t> targets;
        {
          std::lock_guard<std::mutex> l(mu_);
          targets = targets_;
        }
        for (uint32_t pid : targets) {
          StackSample s;
          s.pid = s.tid = pid;
          s.user_ips = stack_;
          s.weight = weight_;
          ++seen_;
          ++delivered_;
          sink(s);
        }
      }
    });
    return absl::OkStatus();
  }
  absl::Status SetTargets(const std::vector<uint32_t>& tgids) override {
    std::lock_guard<std::mutex> l(mu_);
    targets_ = tgids;
    return absl::OkStatus();
  }
  void Stop() override {
    running_ = false;
    if (thread_.joinable()) thread_.join();
  }
  bool running() const override { return running_; }
  SamplerStats stats() const override {
    SamplerStats s;
    s.samples_seen = seen_;
    s.samples_delivered = delivered_;
    s.tick_clock = weight_ > 1;
    return s;
  }
  SamplerInfo info() const override {
    SamplerInfo i;
    i.clock = "tick";
    i.tick_attach = "fake/tick";
    i.program_variant = "default";
    return i;
  }

 private:
  const std::vector<uint64_t> stack_;
  const uint32_t weight_;
  std::mutex mu_;
  std::vector<uint32_t> targets_;
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> seen_{0}, delivered_{0};
  std::thread thread_;
};

}  // namespace pprof_sidecar::testing

#endif  // PPROF_SIDECAR_AGENT_TESTING_FAKE_CPU_SAMPLER_H_
