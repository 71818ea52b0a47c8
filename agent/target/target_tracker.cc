#include "agent/target/target_tracker.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

TargetTracker::TargetTracker(DiscoveryOptions opts, absl::Duration interval, OnChange on_change)
    : opts_(std::move(opts)), interval_(interval), on_change_(std::move(on_change)) {}

TargetTracker::~TargetTracker() { Stop(); }

void TargetTracker::Start() {
  CheckNow();
  thread_ = std::thread([this] { Loop(); });
}

void TargetTracker::Stop() {
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void TargetTracker::Loop() {
  std::unique_lock<std::mutex> l(stop_mu_);
  while (!stop_) {
    stop_cv_.wait_for(l, absl::ToChronoMilliseconds(interval_), [this] { return stop_; });
    if (stop_) break;
    l.unlock();
    CheckNow();
    l.lock();
  }
}

void TargetTracker::CheckNow() {
  std::optional<ProcessInfo> cur = current();
  if (cur) {
    auto now = ReadProcessInfo(cur->pid, opts_.proc_root);
    // A zombie keeps its /proc entry but has no exe and no threads to sample.
    if (now.ok() && now->start_time == cur->start_time && !now->exe.empty()) {
      if (on_recheck_) on_recheck_(cur);
      return;
    }
  }
  auto d = DiscoverTarget(opts_);
  std::optional<ProcessInfo> next;
  std::string status;
  if (d.ok()) {
    next = d->target;
    status = d->explanation;
    // Shown in /healthz: a target the agent cannot read gives unsymbolized profiles.
    if (absl::Status r = CheckTargetReadable(next->pid, opts_.proc_root); !r.ok()) {
      status = absl::StrCat(status, "\nwarning: ", r.message());
    }
  } else {
    status = std::string(d.status().message());
  }
  bool changed;
  {
    std::lock_guard<std::mutex> l(mu_);
    changed = current_.has_value() != next.has_value() ||
              (next && (current_->pid != next->pid || current_->start_time != next->start_time));
    bool status_changed = status != status_;
    current_ = next;
    status_ = status;
    if (changed || status_changed) {
      fprintf(stderr, "pprof-sidecar: target: %s\n", status.c_str());
    }
  }
  if (changed) {
    changes_.fetch_add(1);
    if (on_change_) on_change_(next);
  }
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
