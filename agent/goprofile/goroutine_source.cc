#include "agent/goprofile/goroutine_source.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "agent/goprofile/go_stack_format.h"
#include "agent/goruntime/go_labels.h"

namespace pprof_sidecar {
namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

// The pprof label set at `ptr` (g.labels, go_labels.h); none if it cannot be read. Label sets
// are immutable, so they are cached by address for one profile.
Labels ReadLabels(MemoryReader& mem, const GoBinary& bin, uint64_t ptr,
                  std::map<uint64_t, Labels>* cache) {
  if (ptr == 0) return {};
  if (auto it = cache->find(ptr); it != cache->end()) return it->second;
  absl::StatusOr<SampleLabels> set = ReadGoLabels(mem, bin.minor(), ptr);
  Labels out = set.ok() ? *std::move(set) : Labels();
  (*cache)[ptr] = out;
  return out;
}

}  // namespace

GoroutineSource::GoroutineSource(std::shared_ptr<GoBinaryCache> cache,
                                 ProcessSymbolizer* symbolizer)
    : cache_(std::move(cache)), symbolizer_(symbolizer) {
  info_.name = "goroutine";
  info_.description =
      "Stack traces of all current goroutines. Use debug=2 as a query parameter "
      "to export in the same format as an unrecovered panic.";
  info_.debug_levels = {0, 1, 2};
  info_.filename = "goroutine";
  info_.error_prefix = "Could not get goroutine profile";
}

absl::Status GoroutineSource::Availability(const std::optional<ProcessInfo>& target) const {
  if (!target) return absl::UnavailableError("no target process");
  return cache_->Check(target->pid);
}

absl::StatusOr<GoroutineSnapshot> GoroutineSource::Snapshot(pid_t pid, GoProcess* proc) {
  absl::StatusOr<GoProcess> p = cache_->Open(pid);
  if (!p.ok()) return p.status();
  const absl::Time t0 = absl::Now();
  absl::Duration stopped;
  int stops = 0;
  absl::StatusOr<GoroutineSnapshot> snap = ReadGoroutines(
      *p->mem, *p->bin, p->bias, StoppedThreadRegs(absl::Milliseconds(50), &stopped, &stops));
  if (snap.ok()) {
    snap->thread_stops = stops;
    snap->stopped = stopped;
    thread_stops_.fetch_add(stops);
    stopped_micros_.fetch_add(absl::ToInt64Microseconds(stopped));
  }
  if (!snap.ok()) {
    return absl::Status(snap.status().code(),
                        absl::StrCat("pid ", pid, ": ", snap.status().message()));
  }
  last_read_micros_.store(absl::ToInt64Microseconds(absl::Now() - t0));
  last_goroutines_.store(static_cast<int64_t>(snap->goroutines.size()));
  retries_.fetch_add(snap->retries);
  unreadable_.fetch_add(snap->unreadable);
  *proc = std::move(*p);
  return snap;
}

absl::StatusOr<ProfileResponse> GoroutineSource::Collect(const ProfileRequest& req) {
  if (!req.target) return absl::UnavailableError("no target process");
  GoProcess proc;
  absl::StatusOr<GoroutineSnapshot> snap = Snapshot(req.target->pid, &proc);
  if (!snap.ok()) {
    errors_.fetch_add(1);
    return snap.status();
  }
  const GoImage img{proc.bin.get(), proc.bias, proc.exe};
  ProfileResponse resp;
  if (req.debug == 2) {
    resp.body = GoroutineDump(img, *snap, proc.mem.get());
    resp.content_type = "text/plain; charset=utf-8";
  } else {
    std::vector<CountStack> stacks;
    std::map<std::vector<uint64_t>, std::vector<uint64_t>> pcs_of;  // frame PCs -> Go's PCs
    std::map<uint64_t, Labels> labels;
    for (const Goroutine& g : snap->goroutines) {
      if (g.system) continue;
      std::vector<uint64_t> key;
      for (const GoFrame& f : g.frames) key.push_back(f.pc);
      auto it = pcs_of.find(key);
      if (it == pcs_of.end()) it = pcs_of.emplace(key, GoTracebackPcs(img, g.frames)).first;
      stacks.push_back({it->second, ReadLabels(*proc.mem, *proc.bin, g.labels, &labels)});
    }
    if (req.debug == 1) {
      resp.body = CountProfileText(img, "goroutine", stacks);
      resp.content_type = "text/plain; charset=utf-8";
    } else {
      std::vector<std::string> comments = req.comments;
      comments.push_back(
          absl::StrCat("pprof-sidecar: goroutines read from the target's memory, validated and "
                       "re-read if they ran (",
                       snap->retries, " re-read because they ran meanwhile, ", snap->unreadable,
                       " left out without a whole stack, ", snap->running_without_regs,
                       " running without a stack); ", snap->thread_stops,
                       " running goroutines' threads stopped one at a time for their registers, ",
                       absl::FormatDuration(snap->stopped), " in all"));
      absl::StatusOr<std::string> pb = CountProfileProto(
          img, req.target->pid, symbolizer_, "goroutine", stacks, absl::Now(), comments);
      if (!pb.ok()) {
        errors_.fetch_add(1);
        return pb.status();
      }
      resp.body = std::move(*pb);
    }
  }
  profiles_.fetch_add(1);
  return resp;
}

void GoroutineSource::WriteMetrics(const std::optional<ProcessInfo>& target,
                                   MetricsWriter* w) const {
  w->Counter("pprof_sidecar_goroutine_profiles_total", "Goroutine profiles served.",
             static_cast<double>(profiles_.load()));
  w->Counter("pprof_sidecar_goroutine_profile_errors_total", "Goroutine profile requests failed.",
             static_cast<double>(errors_.load()));
  w->Counter("pprof_sidecar_goroutine_rereads_total",
             "Goroutines read again because they ran while being read.",
             static_cast<double>(retries_.load()));
  w->Counter("pprof_sidecar_goroutine_unreadable_total",
             "Goroutines left out of a profile: no whole stack after every attempt.",
             static_cast<double>(unreadable_.load()));
  w->Counter("pprof_sidecar_goroutine_thread_stops_total",
             "Target threads stopped (one at a time, ptrace) for a running goroutine's registers.",
             static_cast<double>(thread_stops_.load()));
  w->Counter("pprof_sidecar_goroutine_thread_stopped_seconds_total",
             "Time target threads spent stopped for those registers.",
             static_cast<double>(stopped_micros_.load()) / 1e6);
  w->Gauge("pprof_sidecar_goroutine_last_read_seconds", "Duration of the last goroutine read.",
           static_cast<double>(last_read_micros_.load()) / 1e6);
  w->Gauge("pprof_sidecar_goroutine_last_count", "Goroutines in the last read (system included).",
           static_cast<double>(last_goroutines_.load()));
}

}  // namespace pprof_sidecar
