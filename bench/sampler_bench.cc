// A/B of the BPF sampler's cost per sample (not a test). Runs several BpfCpuSamplerOptions
// variants against one live target, interleaved: every round runs each variant for one slice,
// in a rotating order, and reads the program's run_time_ns / run_cnt (BPF_STATS_RUN_TIME is
// enabled by this tool for its lifetime). Per variant it prints medians over rounds of
//   ns/inv   BPF time per invocation (every CPU, filtered-out invocations included)
//   ns/kept  BPF time per kept target sample, net of filtered-out invocations (their cost is
//            measured by the "idle" variant: the same program with an empty target set)
//   gross    BPF time per kept target sample, filtered-out invocations included: between two
//            variants of one clock (same invocations), the difference is what a kept sample costs
//            more in one than in the other
//   copy     mean user stack bytes per kept sample
//   root     share of samples whose stack reaches a thread root, from BuildCpuProfile
//
// Usage: sampler_bench --pid=N [--hz=100] [--slice_s=2] [--rounds=5] [--times_out=FILE]
//                     VARIANT...
//   --idle_clock=tick|perf (default perf): the clock of the "idle" variant, whose cost per
//   filtered-out invocation ns/kept is net of; tick prices the tick program's own filter.
//   --times_out: appends "variant time_ns" for every target sample (bpf_ktime_get_ns, i.e.
//   CLOCK_MONOTONIC) and "variant slice start_ns end_ns" per slice, for bench/gap_attrib.py.
//   VARIANT = name:copy_bytes:bound:fp:wakeup_bytes[:ringbuf_kib[:verdict_cache[:walk_in_copy
//             [:clock[:labels]]]]]
//     bound: none | vma | go | both;  fp: kernel frame-pointer walk of the user stack: 0 off,
//     1 on (127 frames), N > 1: at most N frames; negative: the same with the kernel's walker
//     (bpf_get_stack) instead of the program's own
//     wakeup_bytes: 0 = wake the reader at every record, empty = default (a quarter of the
//     ring); ringbuf_kib: empty = sized by default;
//     verdict_cache: 0 = no per-CPU filter verdict cache (default 1); walk_in_copy: 0 = the
//     frame-pointer walk reads every frame from user memory, not from the stack copy (default 1);
//     clock: tick | perf | auto (default; the "idle" variant is perf: with the tick, ns/kept is
//     net of the perf program's filter cost, an upper bound of the tick program's)
//     labels: 1 = the target is a Go program whose samples record the running goroutine's
//     pprof label pointer (fields from its release's layout), as the agent does; default 0
//   A variant named "null" loads a program that returns at once: the floor of BPF_STATS_RUN_TIME.
//   e.g. old:8192:none:1:0 new:8192:both:1:2097152
#include <bpf/bpf.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/goruntime/go_labels.h"
#include "agent/profile/cpu_profile.h"
#include "agent/sampler/cpu_sampler.h"
#include "agent/sampler/cpu_sampler_bench.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {
namespace {

struct Variant {
  std::string name;
  BpfCpuSamplerOptions opts;
  BpfCpuSamplerBenchKnobs knobs;
  bool idle = false;
  bool labels = false;  // record Go label pointers (SampleTarget::go)
};

struct Slice {
  double ns = 0, inv = 0, kept = 0, bytes = 0, root = 0, samples = 0, labelled = 0;
  double stage[6] = {};
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bool ParseVariant(const std::string& spec, Variant* v) {
  std::vector<std::string> f = absl::StrSplit(spec, ':');
  if (f.size() < 5 || f.size() > 10) return false;
  if (f.size() == 10 && !f[9].empty()) v->labels = f[9] != "0";
  if (f.size() >= 7 && !f[6].empty()) v->knobs.cache_filter_verdict = f[6] != "0";
  if (f.size() >= 8 && !f[7].empty()) v->knobs.walk_frames_in_copy = f[7] != "0";
  if (f.size() >= 9 && !f[8].empty()) {
    if (f[8] == "tick") {
      v->opts.clock = BpfCpuSamplerOptions::Clock::kTick;
    } else if (f[8] == "perf") {
      v->opts.clock = BpfCpuSamplerOptions::Clock::kPerfCpuClock;
    } else if (f[8] != "auto") {
      return false;
    }
  }
  if (f.size() >= 6 && !f[5].empty()) {
    uint32_t kib;
    if (!absl::SimpleAtoi(f[5], &kib)) return false;
    v->opts.ringbuf_bytes = kib << 10;
  }
  v->name = f[0];
  v->idle = f[0] == "idle";
  v->knobs.null_program = f[0] == "null";
  uint32_t copy, wake = v->opts.wakeup_bytes;
  int fp;
  if (!absl::SimpleAtoi(f[1], &copy) || !absl::SimpleAtoi(f[3], &fp) ||
      (!f[4].empty() && !absl::SimpleAtoi(f[4], &wake))) {
    return false;
  }
  v->opts.user_stack_bytes = copy;
  v->opts.user_frame_pointer_walk = fp != 0;
  v->knobs.own_fp_walk = fp > 0;
  if (fp < 0) fp = -fp;  // negative: the kernel's walker
  if (fp > 1) v->knobs.user_fp_max_frames = fp;
  v->opts.wakeup_bytes = wake;
  v->opts.bound_copy_vma = f[2] == "vma" || f[2] == "both";
  v->opts.bound_copy_go = f[2] == "go" || f[2] == "both";
  return f[2] == "none" || v->opts.bound_copy_vma || v->opts.bound_copy_go;
}

int Main(int argc, char** argv) {
  int pid = 0, hz = 100, rounds = 5;
  bool stages = false;
  double slice_s = 2;
  std::string times_out;
  std::string idle_clock = "perf";
  std::vector<Variant> variants;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* p) { return a.substr(strlen(p)); };
    if (a.rfind("--pid=", 0) == 0) {
      pid = atoi(val("--pid=").c_str());
    } else if (a.rfind("--hz=", 0) == 0) {
      hz = atoi(val("--hz=").c_str());
    } else if (a.rfind("--rounds=", 0) == 0) {
      rounds = atoi(val("--rounds=").c_str());
    } else if (a.rfind("--times_out=", 0) == 0) {
      times_out = val("--times_out=");
    } else if (a.rfind("--idle_clock=", 0) == 0) {
      idle_clock = val("--idle_clock=");
    } else if (a == "--stages") {
      stages = true;
    } else if (a.rfind("--slice_s=", 0) == 0) {
      slice_s = atof(val("--slice_s=").c_str());
    } else {
      Variant v;
      if (!ParseVariant(a, &v)) {
        fprintf(stderr, "bad variant %s (name:copy:none|vma|go|both:fp:wakeup)\n", a.c_str());
        return 2;
      }
      variants.push_back(v);
    }
  }
  if (pid <= 0 || variants.empty()) {
    fprintf(stderr, "usage: sampler_bench --pid=N [--hz=] [--slice_s=] [--rounds=] VARIANT...\n");
    return 2;
  }
  Variant idle;
  ParseVariant(absl::StrCat("idle:0:none:0:0::::", idle_clock), &idle);
  variants.insert(variants.begin(), idle);
  const int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (stats_fd < 0) fprintf(stderr, "bpf_enable_stats failed: %s\n", strerror(errno));

  ProcessSymbolizer symbolizer;
  GoLabelFields go_fields;
  for (const Variant& v : variants) {
    if (!v.labels || go_fields.enabled()) continue;
    std::optional<GoLabelFields> f = GoSampleLabeler().Fields(pid);
    if (!f) {
      fprintf(stderr, "%s: pid %d is not a Go program with a known layout\n", v.name.c_str(), pid);
      return 2;
    }
    go_fields = *f;
  }
  std::map<std::string, std::vector<Slice>> res;
  FILE* times = nullptr;
  if (!times_out.empty() && (times = fopen(times_out.c_str(), "a")) == nullptr) {
    fprintf(stderr, "open %s: %s\n", times_out.c_str(), strerror(errno));
    return 1;
  }
  auto mono_ns = [] {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + ts.tv_nsec;
  };
  for (int r = 0; r < rounds; ++r) {
    for (size_t k = 0; k < variants.size(); ++k) {
      const Variant& v = variants[(k + r) % variants.size()];
      BpfCpuSamplerBenchKnobs knobs = v.knobs;
      knobs.stage_timing = stages;
      auto s = NewBpfCpuSamplerForBench(v.opts, knobs);
      if (!s.ok()) {
        fprintf(stderr, "%s: %s\n", v.name.c_str(), std::string(s.status().message()).c_str());
        return 1;
      }
      std::vector<SampleTarget> targets;
      if (!v.idle)
        targets.push_back({static_cast<uint32_t>(pid), v.labels ? go_fields : GoLabelFields()});
      if (!(*s)->SetSampleTargets(targets).ok()) return 1;
      std::mutex mu;
      std::vector<StackSample> samples;
      const absl::Time start = absl::Now();
      const uint64_t start_ns = mono_ns();
      absl::Status st = (*s)->Start(hz, [&](const StackSample& x) {
        std::lock_guard<std::mutex> l(mu);
        samples.push_back(x);
      });
      if (!st.ok()) {
        fprintf(stderr, "start: %s\n", std::string(st.message()).c_str());
        return 1;
      }
      absl::SleepFor(absl::Seconds(slice_s));
      (*s)->Stop();
      if (times != nullptr) {
        fprintf(times, "%s slice %llu %llu\n", v.name.c_str(),
                static_cast<unsigned long long>(start_ns),
                static_cast<unsigned long long>(mono_ns()));
        for (const StackSample& x : samples) {
          fprintf(times, "%s %llu\n", v.name.c_str(), static_cast<unsigned long long>(x.time_ns));
        }
      }
      const SamplerStats ss = (*s)->stats();
      Slice sl;
      sl.ns = static_cast<double>(ss.bpf_run_time_ns);
      sl.inv = static_cast<double>(ss.bpf_run_count);
      sl.kept = static_cast<double>(ss.samples_seen);
      sl.bytes = static_cast<double>(ss.bytes_copied);
      const auto stage_ns = BenchStageNs(**s);
      for (int i = 0; i < kBenchStages; ++i) sl.stage[i] = static_cast<double>(stage_ns[i]);
      if (!samples.empty()) {
        CpuProfileParams p;
        p.hz = hz;
        p.start = start;
        p.duration = absl::Seconds(slice_s);
        CpuProfileReport rep;
        (void)BuildCpuProfile(samples, p, &symbolizer, &rep);
        sl.samples = static_cast<double>(rep.samples);
        for (const StackSample& x : samples) sl.labelled += x.go_labels != 0 ? 1 : 0;
        sl.root = static_cast<double>(rep.samples_reaching_root);
      }
      res[v.name].push_back(sl);
    }
    fprintf(stderr, "round %d/%d done\n", r + 1, rounds);
  }
  std::vector<double> idle_per_inv;
  for (const Slice& s : res["idle"]) {
    if (s.inv > 0) idle_per_inv.push_back(s.ns / s.inv);
  }
  const double idle_ns = Median(idle_per_inv);
  printf("%-12s %9s %9s %9s %9s %8s %8s %7s %7s", "variant", "ns/inv", "ns/kept", "gross", "kept/s",
         "copy_B", "root%", "label%", "rounds");
  if (stages) printf("  | stage ns/kept: filter reserve regs+kstack user_fp copy submit");
  printf("\n");
  for (const Variant& v : variants) {
    std::vector<double> per_inv, per_kept, gross, kept_s, copy, root, labelled;
    for (const Slice& s : res[v.name]) {
      if (s.inv > 0) per_inv.push_back(s.ns / s.inv);
      if (s.kept > 0) {
        per_kept.push_back((s.ns - (s.inv - s.kept) * idle_ns) / s.kept);
        gross.push_back(s.ns / s.kept);
        copy.push_back(s.bytes / s.kept);
      }
      kept_s.push_back(s.kept / slice_s);
      if (s.samples > 0) root.push_back(100.0 * s.root / s.samples);
      if (s.samples > 0) labelled.push_back(100.0 * s.labelled / s.samples);
    }
    printf("%-12s %9.0f %9.0f %9.0f %9.1f %8.0f %8.1f %7.1f %7zu", v.name.c_str(), Median(per_inv),
           Median(per_kept), Median(gross), Median(kept_s), Median(copy), Median(root),
           Median(labelled), res[v.name].size());
    if (stages) {
      printf("  |");
      for (int i = 0; i < 6; ++i) {
        std::vector<double> st;
        for (const Slice& s : res[v.name]) {
          if (s.kept > 0) st.push_back(s.stage[i] / s.kept);
        }
        printf(" %6.0f", Median(st));
      }
    }
    printf("\n");
  }
  if (stats_fd >= 0) close(stats_fd);
  return 0;
}

}  // namespace
}  // namespace pprof_sidecar

int main(int argc, char** argv) { return pprof_sidecar::Main(argc, argv); }
