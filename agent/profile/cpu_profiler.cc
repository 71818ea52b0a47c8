#include "agent/profile/cpu_profiler.h"

#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

// A sample as windows keep it: reduced, with the mappings its process had then.
struct CpuProfiler::Delivered {
  StackSample sample;
  std::shared_ptr<const ProcessSymbolizer::MapsSnapshot> maps;
};

struct CpuProfiler::Window {
  std::mutex mu;
  // Shared by every window open when the sample arrived: concurrent windows cost a pointer per
  // sample each, not a copy.
  std::vector<std::shared_ptr<const Delivered>> samples;
  size_t max_samples = 0;
  uint64_t dropped = 0;
};

CpuProfiler::CpuProfiler(SamplerFactory factory, ProcessSymbolizer* symbolizer, int hz,
                         UnwindTableCache* unwind_tables)
    : factory_(std::move(factory)),
      symbolizer_(symbolizer),
      hz_(hz),
      unwinder_(symbolizer, unwind_tables) {}

CpuProfiler::~CpuProfiler() {
  std::lock_guard<std::mutex> l(sampler_mu_);
  if (sampler_) sampler_->Stop();
}

absl::Status CpuProfiler::SetTargets(const std::vector<uint32_t>& pids) {
  std::lock_guard<std::mutex> l(sampler_mu_);
  // Load the BPF program now rather than at the first window's start (the agent normally did
  // at start: Prepare), and before Warm: libbpf's parse of the kernel's BTF (~11 MB, freed
  // after the load) then does not add to the memory the target's binaries hold. A failure is
  // reported by the window that needs the sampler.
  if (!sampler_ && !pids.empty()) CreateSamplerLocked().IgnoreError();
  targets_ = pids;
  for (auto it = go_fields_.begin(); it != go_fields_.end();) {
    it = std::count(pids.begin(), pids.end(), it->first) ? std::next(it) : go_fields_.erase(it);
  }
  if (sampler_) return sampler_->SetSampleTargets(SampleTargetsLocked());
  return absl::OkStatus();
}

std::vector<SampleTarget> CpuProfiler::SampleTargetsLocked() const {
  std::vector<SampleTarget> out;
  for (uint32_t pid : targets_) {
    auto it = go_fields_.find(pid);
    out.push_back({pid, it == go_fields_.end() ? GoLabelFields() : it->second});
  }
  return out;
}

void CpuProfiler::Warm(const std::vector<uint32_t>& pids) {
  for (uint32_t p : pids) {
    std::lock_guard<std::mutex> l(unwind_mu_);
    unwinder_.Warm(p);
  }
  if (labeler_ != nullptr) {
    for (uint32_t p : pids) {
      std::optional<GoLabelFields> f = labeler_->Fields(p);
      std::lock_guard<std::mutex> l(sampler_mu_);
      if (!std::count(targets_.begin(), targets_.end(), p)) continue;
      if (f) {
        go_fields_[p] = *f;
      } else {
        go_fields_.erase(p);
      }
      if (sampler_) {
        if (absl::Status st = sampler_->SetSampleTargets(SampleTargetsLocked()); !st.ok()) {
          fprintf(stderr, "pprof-sidecar: sampling labels of pid %u: %s\n", p,
                  std::string(st.message()).c_str());
        }
      }
    }
  }
#if !defined(__SANITIZE_ADDRESS__)
  // Parsing binaries and tables leaves freed memory in malloc's arenas; give it back now rather
  // than at the end of the first window.
  if (!pids.empty()) malloc_trim(0);
#endif
}

absl::Status CpuProfiler::CreateSamplerLocked() {
  auto s = factory_();
  if (!s.ok()) {
    sampler_error_ = std::string(s.status().message());
    return absl::UnavailableError(s.status().message());
  }
  sampler_ = *std::move(s);
  sampler_error_.clear();
  return absl::OkStatus();
}

absl::Status CpuProfiler::Prepare() {
  std::lock_guard<std::mutex> l(sampler_mu_);
  if (sampler_) return absl::OkStatus();
  return CreateSamplerLocked();
}

CpuReadiness CpuProfiler::readiness() const {
  std::lock_guard<std::mutex> l(sampler_mu_);
  CpuReadiness r;
  r.ready = sampler_ != nullptr;
  if (sampler_) {
    r.sampler = sampler_->info();
  } else {
    r.reason = sampler_error_.empty() ? "the CPU sampler was not created yet" : sampler_error_;
  }
  return r;
}

namespace {
void AddStats(const SamplerStats& s, SamplerStats* to) {
  to->samples_seen += s.samples_seen;
  to->samples_delivered += s.samples_delivered;
  to->samples_after_stop += s.samples_after_stop;
  to->dropped_ringbuf_full += s.dropped_ringbuf_full;
  to->user_stack_errors += s.user_stack_errors;
  to->kernel_stack_errors += s.kernel_stack_errors;
  to->user_stack_copy_errors += s.user_stack_copy_errors;
  to->copy_bounded_go += s.copy_bounded_go;
  to->copy_bounded_vma += s.copy_bounded_vma;
  to->stack_vma_lookups += s.stack_vma_lookups;
  to->bytes_copied += s.bytes_copied;
  to->bpf_run_time_ns += s.bpf_run_time_ns;
  to->bpf_run_count += s.bpf_run_count;
  to->tick_state_errors += s.tick_state_errors;
  to->cpus = s.cpus;
  to->tick_clock = s.tick_clock;
}
}  // namespace

absl::Status CpuProfiler::Acquire() {
  std::lock_guard<std::mutex> l(sampler_mu_);
  if (users_ == 0) {
    // The sampler (a loaded BPF program) is kept between windows; only its perf events are
    // opened and closed per window.
    if (!sampler_) {
      if (absl::Status st = CreateSamplerLocked(); !st.ok()) return st;
    }
    absl::Status st = sampler_->SetSampleTargets(SampleTargetsLocked());
    if (st.ok()) st = sampler_->Start(hz_, [this](const StackSample& x) { Deliver(x); });
    if (!st.ok()) {
      AddStats(sampler_->stats(), &base_stats_);
      sampler_.reset();
      sampler_error_ = std::string(st.message());
      return absl::UnavailableError(st.message());
    }
  }
  ++users_;
  return absl::OkStatus();
}

void CpuProfiler::Release() {
  // Stop under the lock so that a window opening meanwhile restarts the sampler only after it
  // stopped. Stop drains pending samples into the (now closing) windows; Deliver does not take
  // sampler_mu_.
  std::lock_guard<std::mutex> l(sampler_mu_);
  if (--users_ > 0) return;
  if (sampler_) sampler_->Stop();
}

void CpuProfiler::Deliver(const StackSample& s) {
  auto reduced = std::make_shared<Delivered>();
  reduced->sample = s;
  {
    std::lock_guard<std::mutex> l(unwind_mu_);
    unwinder_.Reduce(&reduced->sample, &reduced->maps);
  }
  if (s.go_labels != 0 && labeler_ != nullptr) {
    reduced->sample.labels = labeler_->Labels(s.pid, s.go_labels);
    if (reduced->sample.labels && !reduced->sample.labels->empty()) labelled_.fetch_add(1);
  }
  std::shared_ptr<const Delivered> shared = std::move(reduced);
  std::lock_guard<std::mutex> l(windows_mu_);
  for (Window* w : windows_) {
    std::lock_guard<std::mutex> wl(w->mu);
    if (w->samples.size() >= w->max_samples) {
      ++w->dropped;
      dropped_full_.fetch_add(1);
      continue;
    }
    w->samples.push_back(shared);
  }
}

absl::StatusOr<std::string> CpuProfiler::Collect(absl::Duration duration, const WindowEnd& end,
                                                 std::vector<std::string> comments) {
  Window w;
  const long ncpu = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  // Every CPU fully busy with target threads, plus slack.
  w.max_samples = static_cast<size_t>(
      (absl::ToDoubleSeconds(duration) + 1) * hz_ * static_cast<double>(ncpu) * 1.25 + 64);
  if (absl::Status st = Acquire(); !st.ok()) return st;
  windows_started_.fetch_add(1);
  const absl::Time start = absl::Now();
  {
    std::lock_guard<std::mutex> l(windows_mu_);
    windows_.insert(&w);
  }
  const absl::Time deadline = start + duration;
  bool was_cancelled = false, was_cut_short = false;
  std::string clock;
  while (absl::Now() < deadline) {
    if (end.cancelled && end.cancelled()) {
      was_cancelled = true;
      break;
    }
    if (end.cut_short && end.cut_short()) {
      was_cut_short = true;
      break;
    }
    absl::SleepFor(std::min(absl::Milliseconds(50), deadline - absl::Now()));
  }
  {
    // Samples taken before the deadline may still wait in the sampler's buffer.
    std::lock_guard<std::mutex> l(sampler_mu_);
    if (sampler_) {
      sampler_->Flush();
      clock = sampler_->stats().tick_clock ? "the scheduler tick" : "cpu-clock perf events";
    }
  }
  Release();
  {
    std::lock_guard<std::mutex> l(windows_mu_);
    windows_.erase(&w);
  }
  const absl::Duration actual = absl::Now() - start;
  if (was_cancelled) return absl::CancelledError("client went away");

  std::lock_guard<std::mutex> wl(w.mu);
  if (was_cut_short) {
    comments.push_back(
        absl::StrCat("pprof-sidecar: window cut short after ",
                     absl::FormatDuration(absl::Trunc(actual, absl::Milliseconds(1))), " of the ",
                     absl::FormatDuration(duration), " asked: ", end.cut_short_reason));
  }
  if (w.dropped > 0) {
    comments.push_back(
        absl::StrCat("pprof-sidecar: ", w.dropped, " samples dropped: window buffer full"));
  }
  CpuProfileParams p;
  p.hz = hz_;
  p.clock = std::move(clock);
  p.start = start;
  p.duration = actual;
  p.comments = std::move(comments);
  CpuProfileReport rep;
  std::vector<const StackSample*> samples;
  std::vector<std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>> maps;
  samples.reserve(w.samples.size());
  maps.reserve(w.samples.size());
  for (const auto& x : w.samples) {
    samples.push_back(&x->sample);
    maps.push_back(x->maps);
  }
  auto out = BuildCpuProfile(samples, p, symbolizer_, &rep, &maps);
  samples = {};
  maps = {};
  // Give the window's memory back to the system instead of leaving it in malloc's arenas
  // between requests.
  w.samples.clear();
  w.samples.shrink_to_fit();
#if !defined(__SANITIZE_ADDRESS__)  // ASan owns the heap: glibc's trim would walk no arenas
  malloc_trim(0);
#endif
  {
    std::lock_guard<std::mutex> l(built_mu_);
    built_ += rep;
  }
  return out;
}

CpuProfilerStats CpuProfiler::stats() const {
  CpuProfilerStats s;
  {
    std::lock_guard<std::mutex> l(sampler_mu_);
    s.sampler = base_stats_;
    if (sampler_) AddStats(sampler_->stats(), &s.sampler);
  }
  {
    std::lock_guard<std::mutex> l(windows_mu_);
    s.windows_active = windows_.size();
  }
  s.windows_started = windows_started_.load();
  s.samples_dropped_window_full = dropped_full_.load();
  {
    std::lock_guard<std::mutex> l(built_mu_);
    s.profiles = built_;
  }
  s.samples_labelled = labelled_.load();
  return s;
}

}  // namespace pprof_sidecar
