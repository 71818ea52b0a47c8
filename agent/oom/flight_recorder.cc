#include "agent/oom/flight_recorder.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {
namespace {

std::string Mib(uint64_t b) {
  return b < (1 << 20) ? absl::StrFormat("%.1f KiB", b / 1024.0)
                       : absl::StrFormat("%.1f MiB", b / 1048576.0);
}

std::string DescribeReading(const MemoryReading& r) {
  std::string s = absl::StrCat(r.usage_from_cgroup ? "cgroup usage " : "RSS ", Mib(r.usage));
  if (r.limit) {
    absl::StrAppend(&s, absl::StrFormat(" of limit %s (%.1f %%, %s)", Mib(*r.limit),
                                        100.0 * r.usage / *r.limit, r.limit_source));
  } else {
    absl::StrAppend(&s, ", no limit known");
  }
  absl::StrAppend(&s, ", RSS ", Mib(r.rss));
  return s;
}

}  // namespace

FlightRecorder::FlightRecorder(FlightRecorderOptions opts, SnapshotStore* store,
                               const ProfileRegistry* registry, TargetFn target)
    : opts_(std::move(opts)),
      store_(store),
      registry_(registry),
      target_(std::move(target)),
      watcher_(opts_.watcher),
      policy_(opts_.policy) {}

FlightRecorder::~FlightRecorder() { Stop(); }

void FlightRecorder::Start() {
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void FlightRecorder::Stop() {
  {
    std::lock_guard<std::mutex> l(loop_mu_);
    stop_ = true;
  }
  loop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FlightRecorder::Loop() {
  std::unique_lock<std::mutex> l(loop_mu_);
  while (!stop_) {
    l.unlock();
    Poll(absl::Now());
    l.lock();
    loop_cv_.wait_for(l, absl::ToChronoMilliseconds(opts_.poll_interval), [this] { return stop_; });
  }
}

void FlightRecorder::Poll(absl::Time now) {
  const std::optional<ProcessInfo> t = target_();
  if (!t) return;
  absl::StatusOr<MemoryReading> r = watcher_.Read(t->pid, t->start_time);
  {
    std::lock_guard<std::mutex> l(mu_);
    ++stats_.polls;
    if (!r.ok()) {
      ++stats_.read_errors;
      return;
    }
    stats_.last = *r;
    stats_.last_pid = t->pid;
    last_target_ = t;
  }
  SeedFromStore(*t, now);
  MaybeReadRecent(*t, *r, now);
  std::optional<SnapshotTrigger> trig =
      policy_.Observe(t->pid, t->start_time, r->usage, r->limit, now);
  if (!trig) return;
  absl::Status st = Capture(*t, trig->reason, *r);
  fprintf(stderr, "pprof-sidecar: snapshot %s of pid %d at %s: %s\n", trig->reason.c_str(), t->pid,
          DescribeReading(*r).c_str(), st.ok() ? "saved" : std::string(st.message()).c_str());
}

absl::Status FlightRecorder::Capture(const ProcessInfo& t, const std::string& reason,
                                     const MemoryReading& r) {
  std::lock_guard<std::mutex> cl(capture_mu_);
  SnapshotMeta m;
  m.reason = reason;
  m.time = absl::Now();
  m.pid = t.pid;
  m.start_time = t.start_time;
  m.comm = t.comm;
  m.usage = r.usage;
  m.rss = r.rss;
  m.limit = r.limit.value_or(0);
  absl::Status heap_st;
  for (const char* kind : {"heap", "goroutine"}) {
    const bool heap = kind == std::string("heap");
    // The goroutine profile where there is one: registered, and available for this target
    // (Go targets only); heap is always tried (a failure is what /healthz must show).
    if (!heap) {
      ProfileSource* src = registry_->Lookup(kind);
      if (src == nullptr || !src->Availability(t).ok()) continue;
    }
    absl::StatusOr<std::string> body = CollectKind(kind, t, reason, r, m.time);
    absl::Status st = body.status();
    std::string stage = absl::StrCat(kind, "_collect");
    if (body.ok()) {
      m.kind = kind;
      st = store_->Write(m, *body).status();
      stage = "write";
    }
    if (!st.ok()) {
      std::lock_guard<std::mutex> l(mu_);
      ++stats_.capture_failures[stage];
      if (heap) heap_st = st;
    }
  }
  return heap_st;
}

absl::StatusOr<std::string> FlightRecorder::CollectKind(const char* kind, const ProcessInfo& t,
                                                        const std::string& reason,
                                                        const MemoryReading& r, absl::Time when) {
  ProfileSource* src = registry_->Lookup(kind);
  if (src == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("no ", kind, " profile kind is registered"));
  }
  ProfileRequest req;
  req.target = t;
  req.comments = {absl::StrCat("snapshot ", reason, " of pid ", t.pid, " (", t.comm, ") at ",
                               absl::FormatTime(absl::RFC3339_full, when, absl::UTCTimeZone())),
                  absl::StrCat("memory: ", DescribeReading(r))};
  absl::StatusOr<ProfileResponse> resp = src->Collect(req);
  if (!resp.ok()) return resp.status();
  return std::move(resp->body);
}

void FlightRecorder::SeedFromStore(const ProcessInfo& t, absl::Time now) {
  if (t.pid == seeded_pid_ && t.start_time == seeded_start_) return;
  seeded_pid_ = t.pid;
  seeded_start_ = t.start_time;
  std::vector<std::pair<int, absl::Time>> fired;
  for (const SnapshotMeta& m : store_->List()) {
    int percent = 0;
    absl::string_view reason = m.reason;
    if (m.pid == t.pid && m.start_time == t.start_time && absl::ConsumeSuffix(&reason, "pct") &&
        absl::SimpleAtoi(reason, &percent)) {
      fired.emplace_back(percent, m.time);
    }
  }
  policy_.Seed(t.pid, t.start_time, fired, now);
}

void FlightRecorder::MaybeReadRecent(const ProcessInfo& t, const MemoryReading& r, absl::Time now) {
  if (opts_.recent_interval <= absl::ZeroDuration() || !r.limit || *r.limit == 0 ||
      now < next_recent_) {
    return;
  }
  const int zone = (opts_.policy.percents.empty() ? 95 : opts_.policy.percents.back()) - 10;
  if (100.0 * r.usage / *r.limit < zone) return;
  next_recent_ = now + opts_.recent_interval;
  absl::StatusOr<std::string> body =
      CollectKind("heap", t, "near the limit, kept in memory in case of an OOM kill", r, now);
  if (!body.ok()) return;
  std::lock_guard<std::mutex> l(mu_);
  recent_ = Recent{t, r, now, *std::move(body)};
  ++stats_.recent_reads;
}

absl::Status FlightRecorder::SaveRecent(const ProcessInfo& t) {
  std::optional<Recent> rec;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (recent_ && recent_->target.pid == t.pid && recent_->target.start_time == t.start_time) {
      rec = std::move(recent_);
      recent_.reset();
    }
  }
  if (!rec) return absl::NotFoundError("no recent heap read of the process");
  SnapshotMeta m;
  m.kind = "heap";
  m.reason = "oom-kill";
  m.time = rec->time;
  m.pid = t.pid;
  m.start_time = t.start_time;
  m.comm = t.comm;
  m.usage = rec->reading.usage;
  m.rss = rec->reading.rss;
  m.limit = rec->reading.limit.value_or(0);
  absl::Status st = store_->Write(m, rec->profile).status();
  std::lock_guard<std::mutex> l(mu_);
  last_recent_age_ = absl::Now() - rec->time;
  return st;
}

void FlightRecorder::OnOomVictim(pid_t pid, uint64_t start_time) {
  std::optional<ProcessInfo> t;
  MemoryReading r;
  {
    std::lock_guard<std::mutex> l(mu_);
    t = last_target_;
    if (stats_.last) r = *stats_.last;
    if (!t || pid == 0 || t->pid != pid || (start_time != 0 && t->start_time != start_time)) {
      ++stats_.oom_events_other;
      return;
    }
    ++stats_.oom_events;
  }
  absl::Status st = Capture(*t, "oom-kill", r);
  absl::Status recent = absl::OkStatus();
  if (!st.ok()) recent = SaveRecent(*t);
  std::string outcome = "saved";
  {
    std::lock_guard<std::mutex> l(mu_);
    if (st.ok()) {
      ++stats_.oom_snapshots;
    } else if (recent.ok()) {
      ++stats_.oom_snapshots_recent;
      outcome = absl::StrCat("the process was gone (", st.message(), "): saved the heap read ",
                             absl::FormatDuration(last_recent_age_), " before");
    } else {
      ++stats_.oom_snapshot_failures;
      stats_.last_oom_error = std::string(st.message());
      outcome = absl::StrCat(st.message(), "; ", recent.message());
    }
  }
  fprintf(stderr, "pprof-sidecar: pid %d chosen as OOM victim (last %s); at-kill snapshot: %s\n",
          pid, DescribeReading(r).c_str(), outcome.c_str());
}

void FlightRecorder::SetOomEventStatus(absl::Status st) {
  std::lock_guard<std::mutex> l(mu_);
  oom_event_status_ = std::move(st);
}

absl::Duration FlightRecorder::last_recent_age() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_recent_age_;
}

FlightRecorderStats FlightRecorder::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

std::string FlightRecorder::HealthLines() const {
  const SnapshotStoreStats ss = store_->stats();
  const absl::Status store_health = store_->health();
  std::lock_guard<std::mutex> l(mu_);
  std::string out = absl::StrCat("snapshots: ", ss.kept, " kept (", Mib(ss.kept_bytes), ") in ",
                                 store_->dir(), "\n");
  if (!store_health.ok()) {
    absl::StrAppend(&out, "snapshots: cannot write: ", store_health.message(), "\n");
  }
  if (stats_.last) {
    absl::StrAppend(&out, "memory (last reading): pid ", stats_.last_pid, " ",
                    DescribeReading(*stats_.last), "\n");
  }
  absl::StrAppend(&out, "oom-kill event: ",
                  oom_event_status_.ok()
                      ? "attached"
                      : absl::StrCat("unavailable: ", oom_event_status_.message()),
                  "\n");
  return out;
}

void FlightRecorder::WriteMetrics(MetricsWriter* w) const {
  const SnapshotStoreStats ss = store_->stats();
  const bool writable = store_->health().ok();
  const FlightRecorderStats s = stats();
  std::vector<std::pair<std::string, double>> by_reason, failures;
  for (const auto& [k, v] : ss.written_by_reason) by_reason.emplace_back(k, v);
  for (const auto& [k, v] : s.capture_failures) failures.emplace_back(k, v);
  if (ss.write_failures > 0 && !s.capture_failures.count("write")) {
    failures.emplace_back("write", ss.write_failures);
  }
  w->CounterFamily("pprof_sidecar_snapshots_total", "Snapshots written, by reason.", "reason",
                   by_reason);
  w->CounterFamily("pprof_sidecar_snapshot_failures_total",
                   "Snapshots that failed, by stage (heap_collect, goroutine_collect, write).",
                   "stage", failures);
  w->Gauge("pprof_sidecar_snapshots_kept", "Snapshots in the snapshot directory.", ss.kept);
  w->Gauge("pprof_sidecar_snapshot_bytes", "Bytes of profiles kept in the snapshot directory.",
           ss.kept_bytes);
  w->Counter("pprof_sidecar_snapshots_evicted_total", "Snapshots deleted to bound the ring.",
             ss.evicted);
  w->Gauge("pprof_sidecar_snapshot_dir_writable",
           "1 unless the last snapshot write failed (full or read-only directory).", writable);
  w->Counter("pprof_sidecar_oom_kills_total", "Times the kernel chose the target as OOM victim.",
             s.oom_events);
  w->CounterFamily("pprof_sidecar_oom_kill_snapshots_total",
                   "At-kill heap snapshots by result: saved (read from the dying process), "
                   "saved_recent (it was gone: the last read near the limit), failed.",
                   "result",
                   {{"saved", s.oom_snapshots},
                    {"saved_recent", s.oom_snapshots_recent},
                    {"failed", s.oom_snapshot_failures}});
  w->Counter("pprof_sidecar_snapshot_recent_reads_total",
             "Heap reads kept in memory near the limit for an OOM kill.", s.recent_reads);
  if (s.last) {
    w->Gauge("pprof_sidecar_target_memory_usage_bytes",
             "The target's memory usage (its cgroup's, else its RSS).", s.last->usage);
    w->Gauge("pprof_sidecar_target_memory_rss_bytes", "The target's resident set.", s.last->rss);
    w->Gauge("pprof_sidecar_target_memory_limit_bytes", "The target's memory limit (0: none).",
             s.last->limit.value_or(0));
  }
}

}  // namespace pprof_sidecar
