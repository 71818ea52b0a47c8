#include "agent/profile/cpu_source.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

CpuSource::CpuSource(CpuProfiler* cpu, int default_seconds) : cpu_(cpu) {
  info_.name = "profile";
  info_.description =
      "CPU profile of the target, sampled with eBPF. You can specify the duration in the seconds "
      "GET parameter. After you get the profile file, use the go tool pprof command to "
      "investigate the profile.";
  info_.seconds = ProfileKindInfo::Seconds::kWindow;
  info_.default_seconds = default_seconds;
  info_.debug_levels = {};  // Go's handler ignores debug
  info_.filename = "profile";
  info_.error_prefix = "Could not enable CPU profiling";
  info_.gates_readiness = true;
}

absl::StatusOr<ProfileResponse> CpuSource::Collect(const ProfileRequest& req) {
  CpuProfiler::WindowEnd end;
  end.cancelled = req.cancelled;
  end.cut_short = req.cut_short;
  end.cut_short_reason = req.cut_short_reason;
  auto prof = cpu_->Collect(req.seconds, end, req.comments);
  if (!prof.ok()) {
    // The sampler's state (no privileges, a refused clock): the agent cannot serve it now.
    if (absl::IsUnavailable(prof.status()) || absl::IsCancelled(prof.status())) {
      return prof.status();
    }
    return absl::InternalError(prof.status().message());
  }
  ProfileResponse r;
  r.body = *std::move(prof);
  return r;
}

absl::Status CpuSource::Availability(const std::optional<ProcessInfo>&) const {
  const CpuReadiness r = cpu_->readiness();
  if (r.ready) return absl::OkStatus();
  return absl::UnavailableError(r.reason);
}

std::string CpuSource::HealthLines(const std::optional<ProcessInfo>&) const {
  const CpuReadiness cpu = cpu_->readiness();
  if (!cpu.ready) {
    return absl::StrCat("cpu: unavailable: ", cpu.reason, "\n",
                        "heap: Go targets' heap and allocs profiles (read from the target's "
                        "memory) still work; native malloc profiling needs the same BPF "
                        "privileges\n");
  }
  const SamplerInfo& i = cpu.sampler;
  std::string o = absl::StrCat("cpu: ", i.clock, " clock", i.tick_attach.empty() ? "" : " at ",
                               i.tick_attach, ", ", i.program_variant, " BPF program\n");
  if (!i.tick_unavailable.empty()) {
    absl::StrAppend(&o, "tick clock unavailable: ", i.tick_unavailable, "\n");
  }
  for (const std::string& f : i.reduced) absl::StrAppend(&o, "reduced: kernel lacks ", f, "\n");
  return o;
}

void CpuSource::WriteMetrics(const std::optional<ProcessInfo>&, MetricsWriter* w) const {
  const CpuProfilerStats c = cpu_->stats();
  const CpuReadiness ready = cpu_->readiness();
  w->Gauge("pprof_sidecar_cpu_profiling_ready",
           "1 when CPU profiles can be taken (the sampler is loaded and attached), else 0.",
           ready.ready ? 1 : 0);
  w->GaugeFamily("pprof_sidecar_cpu_sampling_clock",
                 "What takes CPU samples (1: this one): the scheduler tick or cpu-clock perf "
                 "events.",
                 "clock",
                 {{"tick", ready.sampler.clock == "tick" ? 1 : 0},
                  {"perf", ready.sampler.clock == "perf" ? 1 : 0}});
  w->Info("pprof_sidecar_bpf_program_info",
          "The CPU sampling program: its build (default, or compat for kernels without newer BPF "
          "features) and the tick's attach point.",
          {{"variant", ready.sampler.program_variant},
           {"tick_attach", ready.sampler.tick_attach},
           {"reduced_features", absl::StrCat(ready.sampler.reduced.size())}},
          ready.ready ? 1 : 0);
  WriteSamplerMetrics(c, w);
  WriteUnwindMetrics(c, w);
  w->Gauge("pprof_sidecar_cpu_profiles_active", "CPU profile windows currently open.",
           c.windows_active);
  w->Counter("pprof_sidecar_cpu_profiles_total", "CPU profile windows opened.", c.windows_started);
}

void CpuSource::WriteSamplerMetrics(const CpuProfilerStats& c, MetricsWriter* w) const {
  const SamplerStats& s = c.sampler;
  w->Counter("pprof_sidecar_samples_total",
             "CPU samples of target threads seen by the BPF program.", s.samples_seen);
  w->Counter("pprof_sidecar_samples_delivered_total", "CPU samples delivered to user space.",
             s.samples_delivered);
  w->CounterFamily(
      "pprof_sidecar_samples_dropped_total", "CPU samples lost, by reason.", "reason",
      {{"ringbuf_full", s.dropped_ringbuf_full}, {"window_full", c.samples_dropped_window_full}});
  w->CounterFamily("pprof_sidecar_stack_errors_total", "Stack captures that failed in BPF.",
                   "stack", {{"user", s.user_stack_errors}, {"kernel", s.kernel_stack_errors}});
  w->Counter("pprof_sidecar_tick_state_errors_total",
             "Tick clock: samples skipped because the thread's sampling state could not be "
             "created.",
             s.tick_state_errors);
  w->Counter("pprof_sidecar_stack_copy_errors_total",
             "Samples whose user stack could not be copied at all (unwound from frame pointers).",
             s.user_stack_copy_errors);
  w->CounterFamily("pprof_sidecar_stack_copies_bounded_total",
                   "User stack copies that stopped at the stack's end, by how the end was found.",
                   "by", {{"go_stack_hi", s.copy_bounded_go}, {"vma_end", s.copy_bounded_vma}});
  w->Counter("pprof_sidecar_stack_vma_lookups_total",
             "Stack mappings looked up by the BPF program (once per thread and stack; "
             "remembered).",
             s.stack_vma_lookups);
  w->Counter("pprof_sidecar_stack_copy_bytes_total", "User stack bytes copied by the BPF program.",
             s.bytes_copied);
  w->Counter("pprof_sidecar_bpf_run_time_ns_total",
             "Time spent in the CPU sampling BPF program, all invocations (0 unless the kernel's "
             "BPF statistics are enabled: sysctl kernel.bpf_stats_enabled=1).",
             s.bpf_run_time_ns);
  w->Counter("pprof_sidecar_bpf_runs_total",
             "Invocations of the CPU sampling BPF program, including those filtered out (0 "
             "unless kernel.bpf_stats_enabled=1).",
             s.bpf_run_count);
}

void CpuSource::WriteUnwindMetrics(const CpuProfilerStats& stats, MetricsWriter* w) const {
  const CpuProfileReport& c = stats.profiles;
  w->Counter("pprof_sidecar_profile_samples_total", "Samples written into served CPU profiles.",
             c.samples);
  w->Counter("pprof_sidecar_profile_samples_truncated_total",
             "Samples in served profiles whose stack does not reach a thread root frame.",
             c.samples - std::min(c.samples, c.samples_reaching_root));
  w->CounterFamily(
      "pprof_sidecar_unsymbolized_frames_total", "Frames left without a symbol.", "space",
      {{"user", c.user_frames_unsymbolized}, {"kernel", c.kernel_frames_unsymbolized}});
  w->Counter("pprof_sidecar_labelled_samples_total",
             "CPU samples of Go targets delivered with their goroutine's pprof labels.",
             stats.samples_labelled);
  w->Counter("pprof_sidecar_unwound_samples_total",
             "Samples whose user stack was unwound from the copied stack (CFI/pclntab).",
             c.samples_unwound);
  w->Counter("pprof_sidecar_unwind_stitched_samples_total",
             "Unwound samples completed from the frame-pointer walk.", c.samples_stitched);
  w->CounterFamily("pprof_sidecar_unwind_truncated_total",
                   "Samples in served profiles not reaching a thread root, by why unwinding "
                   "stopped.",
                   "reason",
                   {{"no_cfi", c.unwind_no_cfi},
                    {"read_outside_stack", c.unwind_read_outside_stack},
                    {"depth_limit", c.unwind_depth_limit},
                    {"bad_address", c.unwind_bad_address},
                    {"stack_switch", c.unwind_stack_switch},
                    {"frame_pointers_only", c.not_root_frame_pointers}});
}

}  // namespace pprof_sidecar
