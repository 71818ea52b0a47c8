// Drains a BPF ring buffer map on a thread of its own, for BPF programs that submit records
// without waking the reader every time (BPF_RB_NO_WAKEUP below a threshold): the reader
// consumes on the kernel's wakeups, every `poll_interval_ms`, and on Flush().
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_RING_READER_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_RING_READER_H_

#include <bpf/libbpf.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/sampler/libbpf_util.h"

namespace pprof_sidecar {

class RingReader {
 public:
  // A reader of the ring buffer map `events` (named `what` in errors) that passes each record to
  // `on_record(ctx, data, size)`, only on the reader thread; the map's program must outlive the
  // reader. Not started.
  static absl::StatusOr<std::unique_ptr<RingReader>> Open(const bpf_map* events,
                                                          absl::string_view what,
                                                          ring_buffer_sample_fn on_record,
                                                          void* ctx, int poll_interval_ms);
  ~RingReader();

  // Starts the reader thread; no-op while running.
  void Start();
  // Returns once every record submitted before the call has been consumed (at most ~2 s).
  // No-op when not running.
  void Flush();
  // Consumes what is left (after `settle_us`, for programs still running on other CPUs) and
  // joins the thread; idempotent.
  void Stop(int settle_us = 0);
  bool running() const { return thread_.joinable(); }

 private:
  RingReader() = default;
  void Loop();
  void Wake();

  RingBufferPtr rb_;  // destroyed after the thread is joined and the fds closed
  int poll_interval_ms_ = 100;
  int epoll_fd_ = -1;  // the ring buffer's epoll fd and wake_fd_
  int wake_fd_ = -1;   // eventfd: Flush() and Stop() wake the thread through it
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> settle_us_{0};
  std::mutex flush_mu_;
  std::condition_variable flush_cv_;
  std::atomic<uint64_t> flush_requested_{0};
  uint64_t flush_done_ = 0;  // guarded by flush_mu_
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_RING_READER_H_
