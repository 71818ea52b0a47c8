#include "agent/target/target_tracker.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

TargetTracker::TargetTracker(DiscoveryOptions opts, absl::Duration interval, OnChange on_change)
    : opts_(std::move(opts)), interval_(interval), on_change_(std::move(on_change)) {}

TargetTracker::~TargetTracker() { Stop(); }

void TargetTracker::Start() {
  CheckNow();
  {
    std::unique_lock<std::mutex> l(work_mu_);
    while (RunPending(l)) {
    }
  }
  checker_ = std::thread([this] { CheckLoop(); });
  worker_ = std::thread([this] { WorkLoop(); });
}

void TargetTracker::Stop() {
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  {
    std::lock_guard<std::mutex> l(work_mu_);  // the worker checks stop_ under work_mu_ too
  }
  work_cv_.notify_all();
  if (checker_.joinable()) checker_.join();
  if (worker_.joinable()) worker_.join();
}

void TargetTracker::CheckLoop() {
  std::unique_lock<std::mutex> l(stop_mu_);
  while (!stop_) {
    stop_cv_.wait_for(l, absl::ToChronoMilliseconds(interval_), [this] { return stop_; });
    if (stop_) break;
    l.unlock();
    CheckNow();
    l.lock();
  }
}

void TargetTracker::WorkLoop() {
  std::unique_lock<std::mutex> l(work_mu_);
  while (true) {
    work_cv_.wait(l, [this] {
      std::lock_guard<std::mutex> sl(stop_mu_);
      return stop_ || change_pending_ || recheck_pending_;
    });
    {
      std::lock_guard<std::mutex> sl(stop_mu_);
      if (stop_) return;
    }
    RunPending(l);
  }
}

bool TargetTracker::RunPending(std::unique_lock<std::mutex>& lock) {
  OnChange* cb = nullptr;
  std::optional<ProcessInfo> arg;
  if (change_pending_) {
    change_pending_ = false;
    cb = on_change_ ? &on_change_ : nullptr;
    arg = change_;
  } else if (recheck_pending_) {
    recheck_pending_ = false;
    cb = on_recheck_ ? &on_recheck_ : nullptr;
    arg = recheck_;
  } else {
    return false;
  }
  const uint64_t upto = queued_;
  working_ = true;
  lock.unlock();
  if (cb != nullptr) (*cb)(arg);
  lock.lock();
  working_ = false;
  done_ = upto;
  work_cv_.notify_all();
  return true;
}

bool TargetTracker::WaitCallbacks(absl::Duration timeout) {
  std::unique_lock<std::mutex> l(work_mu_);
  return work_cv_.wait_for(l, absl::ToChronoMilliseconds(timeout), [this] {
    return done_ == queued_ && !change_pending_ && !recheck_pending_ && !working_;
  });
}

void TargetTracker::Queue(bool change, const std::optional<ProcessInfo>& t) {
  std::lock_guard<std::mutex> l(work_mu_);
  if (change) {
    change_pending_ = true;
    change_ = t;
    recheck_pending_ = false;  // the change callback stands for it
  } else if (!change_pending_) {
    recheck_pending_ = true;
    recheck_ = t;
  }
  ++queued_;
  work_cv_.notify_all();
}

bool TargetTracker::RecheckCurrent(const ProcessInfo& cur) {
  auto now = ReadProcessInfo(cur.pid, opts_.proc_root);
  // A zombie keeps its /proc entry but has no exe and no threads to sample.
  if (!now.ok() || now->start_time != cur.start_time || now->exe.empty() || now->state == 'Z') {
    return false;
  }
  if (now->exe == cur.exe && now->comm == cur.comm) {
    Queue(false, cur);
    return true;
  }
  // Same process, another program: it exec'd (or renamed itself).
  std::string status;
  if (before_publish_) before_publish_(*now);
  {
    std::lock_guard<std::mutex> l(mu_);
    status_ = absl::StrCat("pid ", now->pid, " exec'd: was ", cur.comm, " (", cur.exe, "), now ",
                           now->comm, " (", now->exe, ")");
    status = status_;
    current_ = *now;
  }
  fprintf(stderr, "pprof-sidecar: target: %s\n", status.c_str());
  changes_.fetch_add(1);
  Queue(true, *now);
  return true;
}

std::optional<ProcessInfo> TargetTracker::Rediscover(std::string* status) {
  auto d = DiscoverTarget(opts_);
  if (!d.ok()) {
    *status = std::string(d.status().message());
    return std::nullopt;
  }
  std::optional<ProcessInfo> next = d->target;
  *status = d->explanation;
  // --target_pid names one process: remember which, so a reused pid is not adopted.
  if (opts_.target_pid > 0 && opts_.target_start_time == 0) {
    opts_.target_start_time = next->start_time;
  }
  // Shown in /healthz: a target the agent cannot read gives unsymbolized profiles.
  absl::Status r = CheckTargetReadable(next->pid, opts_.proc_root);
  if (absl::IsNotFound(r)) {  // exited since it was found: not a missing capability
    *status = std::string(r.message());
    next.reset();
  } else if (!r.ok()) {
    *status = absl::StrCat(*status, "\nwarning: ", r.message());
  }
  return next;
}

void TargetTracker::Publish(const std::optional<ProcessInfo>& next, const std::string& status) {
  bool changed;
  {
    std::lock_guard<std::mutex> l(mu_);
    changed = current_.has_value() != next.has_value() ||
              (next && (current_->pid != next->pid || current_->start_time != next->start_time));
  }
  // Only the checker thread writes current_: it cannot change between the two locks.
  if (changed && before_publish_) before_publish_(next);
  {
    std::lock_guard<std::mutex> l(mu_);
    bool status_changed = status != status_;
    current_ = next;
    status_ = status;
    if (changed || status_changed) {
      fprintf(stderr, "pprof-sidecar: target: %s\n", status.c_str());
    }
  }
  if (changed) {
    changes_.fetch_add(1);
    Queue(true, next);
  } else if (next) {
    Queue(false, next);
  }
}

void TargetTracker::CheckNow() {
  std::optional<ProcessInfo> cur = current();
  if (cur && RecheckCurrent(*cur)) return;
  std::string status;
  std::optional<ProcessInfo> next = Rediscover(&status);
  Publish(next, status);
}

std::optional<ProcessInfo> TargetTracker::current() const {
  std::lock_guard<std::mutex> l(mu_);
  return current_;
}

std::string TargetTracker::status_message() const {
  std::lock_guard<std::mutex> l(mu_);
  return status_;
}

}  // namespace pprof_sidecar
