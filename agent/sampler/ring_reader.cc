#include "agent/sampler/ring_reader.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

absl::StatusOr<std::unique_ptr<RingReader>> RingReader::Open(const bpf_map* events,
                                                             absl::string_view what,
                                                             ring_buffer_sample_fn on_record,
                                                             void* ctx, int poll_interval_ms) {
  std::unique_ptr<RingReader> r(new RingReader());
  r->rb_.reset(ring_buffer__new(bpf_map__fd(events), on_record, ctx, nullptr));
  if (!r->rb_) return ErrnoStatus(absl::StrCat("ring_buffer__new(", what, ")"), errno);
  r->poll_interval_ms_ = poll_interval_ms > 0 ? poll_interval_ms : 100;
  r->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (r->wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  r->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (r->epoll_fd_ < 0) {
    return absl::InternalError(absl::StrCat("epoll_create1: ", strerror(errno)));
  }
  for (int fd : {ring_buffer__epoll_fd(r->rb_.get()), r->wake_fd_}) {
    epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(r->epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::InternalError(absl::StrCat("epoll_ctl(ADD): ", strerror(errno)));
    }
  }
  return r;
}

RingReader::~RingReader() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

void RingReader::Start() {
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void RingReader::Wake() {
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    // The thread still wakes at its next poll timeout.
  }
}

void RingReader::Loop() {
  epoll_event evs[2];
  while (true) {
    int n = epoll_wait(epoll_fd_, evs, 2, poll_interval_ms_);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "pprof-sidecar: epoll_wait(ring buffer): %s\n", strerror(errno));
      usleep(poll_interval_ms_ * 1000);
    }
    uint64_t drain;
    while (read(wake_fd_, &drain, sizeof(drain)) > 0) {
    }
    const bool stop = stop_.load();
    const uint64_t want = flush_requested_.load();
    if (stop && settle_us_.load() > 0) usleep(settle_us_.load());
    int c = ring_buffer__consume(rb_.get());
    if (c < 0 && c != -EINTR) {
      fprintf(stderr, "pprof-sidecar: ring_buffer__consume: %s\n", strerror(-c));
    }
    {
      std::lock_guard<std::mutex> l(flush_mu_);
      flush_done_ = want;
    }
    flush_cv_.notify_all();
    if (stop) break;
  }
}

void RingReader::Flush() {
  if (!thread_.joinable()) return;
  const uint64_t want = flush_requested_.fetch_add(1) + 1;
  Wake();
  std::unique_lock<std::mutex> l(flush_mu_);
  flush_cv_.wait_for(l, std::chrono::seconds(2), [&] { return flush_done_ >= want; });
}

void RingReader::Stop(int settle_us) {
  if (!thread_.joinable()) return;
  settle_us_ = settle_us;
  stop_ = true;
  Wake();
  thread_.join();
}

}  // namespace pprof_sidecar
