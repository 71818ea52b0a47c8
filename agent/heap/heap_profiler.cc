#include "agent/heap/heap_profiler.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/heap/allocator_probes.h"
#include "agent/symbolize/proc_maps.h"

namespace pprof_sidecar {

namespace {

// Whether `pid` maps a C library or an allocator library executable (what the malloc sampler
// probes in a Go program).
bool MapsCAllocator(pid_t pid) {
  absl::StatusOr<std::vector<MapEntry>> maps = ReadProcMaps(pid);
  if (!maps.ok()) return false;
  for (const MapEntry& e : *maps) {
    if (e.exec && IsAllocatorLibrary(e.path)) return true;
  }
  return false;
}

}  // namespace

HeapProfiler::HeapProfiler(ProcessSymbolizer* symbolizer,
                           std::shared_ptr<GoBinaryCache> go_binaries, GoHeapReadLimits limits)
    : symbolizer_(symbolizer),
      go_binaries_(go_binaries ? std::move(go_binaries) : std::make_shared<GoBinaryCache>()),
      limits_(limits) {}

HeapProfiler::~HeapProfiler() = default;

absl::StatusOr<GoHeapVars> HeapProfiler::HeapVars(pid_t pid, const GoExecutable& exe) {
  auto with_pid = [pid](const absl::Status& st) {
    return absl::Status(st.code(), absl::StrCat("pid ", pid, ": ", st.message()));
  };
  if (!exe.bin.ok()) {
    if (exe.is_go()) return with_pid(exe.bin.status());  // a release whose pclntab is unreadable
    if (!absl::IsNotFound(exe.bin.status())) return exe.bin.status();
    return absl::UnimplementedError(
        absl::StrCat("pid ", pid,
                     " is not a Go program: heap profiles are read from the Go runtime for Go "
                     "targets, from the malloc sampler for others (disabled here)"));
  }
  bool located_now = false;
  const absl::StatusOr<GoHeapVars>& vars = (*exe.bin)->heap_vars(&located_now);
  if (!vars.ok()) return with_pid(vars.status());
  if (located_now) (vars->method == "symtab" ? by_symtab_ : by_code_).fetch_add(1);
  return *vars;
}

absl::StatusOr<HeapSnapshot> HeapProfiler::ReadGoSnapshot(pid_t pid, std::string* how,
                                                          const GoHeapReadLimits* limits) {
  return ReadGo(pid, how, limits, nullptr);
}

absl::StatusOr<HeapSnapshot> HeapProfiler::ReadGo(pid_t pid, std::string* how,
                                                  const GoHeapReadLimits* limits, GoProcess* proc) {
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Exe(pid);
  if (!exe.ok()) return exe.status();
  absl::StatusOr<GoHeapVars> vars = HeapVars(pid, **exe);
  if (!vars.ok()) return vars.status();
  absl::StatusOr<GoProcess> p = GoBinaryCache::Open(pid, **exe);
  if (!p.ok()) return p.status();
  GoHeapVars rt = *vars;
  rt.mbuckets += p->bias;
  rt.mprof_cycle += p->bias;
  rt.mem_profile_rate += p->bias;
  if (how) {
    const GoHeapVars& v = *vars;
    *how =
        absl::StrCat(v.go_version.empty() ? "Go" : v.go_version, " runtime variables located via ",
                     v.method, v.census.empty() ? "" : " (anchors agreeing " + v.census + ")",
                     p->bin->pie() ? absl::StrCat(", PIE load bias 0x", absl::Hex(p->bias)) : "");
  }
  const absl::Time t0 = absl::Now();
  absl::StatusOr<HeapSnapshot> snap = ReadGoHeap(*p->mem, rt, limits ? *limits : limits_);
  if (!snap.ok()) {
    return absl::Status(snap.status().code(),
                        absl::StrCat("pid ", pid, ": ", snap.status().message()));
  }
  if (limits == nullptr) {  // a whole read, not a probe
    last_read_micros_.store(absl::ToInt64Microseconds(absl::Now() - t0));
    last_buckets_.store(snap->records.size());
  }
  if (proc != nullptr) *proc = *std::move(p);
  return snap;
}

absl::Status HeapProfiler::SleepDelta(const HeapRequest& req, HeapProfileParams* params) {
  const absl::Time start = absl::Now(), deadline = start + req.delta;
  while (absl::Now() < deadline) {
    if (req.cancelled && req.cancelled()) return absl::CancelledError("client went away");
    if (req.cut_short && req.cut_short()) {
      params->comments.push_back(absl::StrCat(
          "pprof-sidecar: delta window cut short after ",
          absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))), " of the ",
          absl::FormatDuration(req.delta), " asked: ", req.cut_short_reason));
      break;
    }
    absl::SleepFor(std::min(absl::Milliseconds(50), deadline - absl::Now()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> HeapProfiler::Collect(pid_t pid, const HeapRequest& req) {
  auto fail = [this](absl::Status st) {
    errors_.fetch_add(1);
    return st;
  };
  if (req.native) {
    if (!native_factory_) {
      return fail(absl::UnimplementedError(
          "malloc profiling is off in this agent (--malloc_profiling=off): C allocations are not "
          "sampled"));
    }
    return CollectNative(pid, req);
  }
  std::string how;
  const absl::Time start = absl::Now();
  GoProcess proc;
  absl::StatusOr<HeapSnapshot> snap = ReadGo(pid, &how, nullptr, &proc);
  if (!snap.ok() && absl::IsUnimplemented(snap.status()) && native_factory_) {
    return CollectNative(pid, req);
  }
  if (!snap.ok()) return fail(snap.status());
  HeapProfileParams params;
  params.kind = req.kind;
  params.comments = req.comments;
  if (req.delta > absl::ZeroDuration()) {
    absl::StatusOr<std::shared_ptr<const GoExecutable>> before = Exe(pid);
    if (absl::Status st = SleepDelta(req, &params); !st.ok()) return fail(st);
    absl::StatusOr<std::shared_ptr<const GoExecutable>> after = Exe(pid);
    if (!before.ok() || !after.ok() || (*before)->key != (*after)->key) {
      return fail(absl::AbortedError(
          absl::StrCat("pid ", pid, " exited or exec'd during the delta window")));
    }
    absl::StatusOr<HeapSnapshot> snap1 = ReadGo(pid, nullptr, nullptr, &proc);
    if (!snap1.ok()) return fail(snap1.status());
    params.time = absl::Now();
    params.duration = params.time - start;
    *snap = SubtractHeap(*snap1, *snap);
    params.comments.push_back(absl::StrCat(
        "pprof-sidecar: delta profile: buckets read at the start and the end of the window, "
        "subtracted"));
  } else {
    params.time = start;
    params.duration = absl::ZeroDuration();
  }
  params.comments.push_back(absl::StrCat("pprof-sidecar: ", how));
  params.comments.push_back(
      "pprof-sidecar: inuse_* is as of the target's last completed GC (Go's published heap "
      "profile cycle)");
  if (req.gc) {
    params.comments.push_back(
        "pprof-sidecar: gc=1 ignored: a GC cannot be forced from outside the target; this is the "
        "profile published by its last GC");
  }
  const GoImage image{proc.bin.get(), proc.bias, proc.exe};
  params.go_image = &image;
  absl::StatusOr<std::string> prof = BuildHeapProfile(*snap, pid, params, symbolizer_, nullptr);
  if (!prof.ok()) return fail(prof.status());
  profiles_.fetch_add(1);
  return prof;
}

absl::StatusOr<GoTargetInfo> HeapProfiler::TargetInfo(pid_t pid) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (info_pid_ == pid && absl::Now() - info_time_ < absl::Seconds(10)) return info_;
  }
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Exe(pid);
  if (!exe.ok()) return exe.status();
  GoTargetInfo info;
  info.is_go = (*exe)->is_go();
  info.go_version = (*exe)->go_version;
  // A program that is not Go has no Go symbols to miss.
  if (!absl::IsNotFound((*exe)->bin.status())) info.symbols = (*exe)->bin.status();
  if (info.is_go) {
    GoHeapReadLimits probe = limits_;
    probe.max_buckets = 64;
    probe.stop_at_max_buckets = true;
    absl::StatusOr<HeapSnapshot> snap = ReadGoSnapshot(pid, nullptr, &probe);
    if (!snap.ok()) info.heap = snap.status();
    info.c_allocator = MapsCAllocator(pid);
  }
  std::lock_guard<std::mutex> l(mu_);
  info_pid_ = pid;
  info_time_ = absl::Now();
  info_ = info;
  return info;
}

const char* MallocPolicyName(MallocPolicy p) {
  switch (p) {
    case MallocPolicy::kOff:
      return "off";
    case MallocPolicy::kOnRequest:
      return "on_request";
    case MallocPolicy::kAlways:
      return "always";
  }
  return "?";
}

absl::StatusOr<MallocPolicy> ParseMallocPolicy(absl::string_view s) {
  if (s == "on_request") return MallocPolicy::kOnRequest;
  if (s == "always" || s == "true") return MallocPolicy::kAlways;
  if (s == "off" || s == "false") return MallocPolicy::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("malloc profiling policy must be on_request, always or off, not \"", s, "\""));
}

void HeapProfiler::EnableNative(NativeHeapFactory factory, NativeHeapOptions options) {
  native_opts_ = std::move(options);
  if (native_opts_.policy == MallocPolicy::kOff) return;
  native_factory_ = std::move(factory);
}

std::vector<std::string> HeapProfiler::NativeHealthLines(absl::string_view what,
                                                         bool go_target) const {
  if (!native_factory_) return {};
  std::vector<std::string> out;
  const bool on_request = native_opts_.policy == MallocPolicy::kOnRequest;
  if (go_target) {
    out.push_back(absl::StrCat(what,
                               ": C allocations (cgo) sampled on request: probes attached "
                               "at the first native_heap/native_allocs request, detached "
                               "after ",
                               absl::FormatDuration(native_opts_.idle_detach), " without one"));
  } else {
    out.push_back(absl::StrCat(
        what, ": malloc profiling ", MallocPolicyName(native_opts_.policy),
        on_request ? absl::StrCat(": probes attached at the first heap/allocs request, detached "
                                  "after ",
                                  absl::FormatDuration(native_opts_.idle_detach), " without one")
                   : ": probes attached while the target exists"));
  }
  std::shared_ptr<NativeHeapSource> n;
  absl::Status err;
  {
    std::lock_guard<std::mutex> l(mu_);
    n = native_;
    err = native_last_error_;
  }
  if (n) {
    out.push_back(
        absl::StrCat(what, ": probes attached to pid ", n->pid(), " since ",
                     absl::FormatTime(absl::RFC3339_sec, n->attached_at(), absl::UTCTimeZone())));
  } else {
    out.push_back(absl::StrCat(what, ": no probes attached now"));
    if (!native_opts_.prerequisite_note.empty()) {
      out.push_back(absl::StrCat(what, ": ", native_opts_.prerequisite_note));
    }
  }
  if (!err.ok()) out.push_back(absl::StrCat(what, ": last attach failed: ", err.message()));
  return out;
}

bool HeapProfiler::OnRequestFor(pid_t pid) {
  if (native_opts_.policy == MallocPolicy::kOnRequest) return true;
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Exe(pid);
  return exe.ok() && (*exe)->is_go();
}

bool HeapProfiler::MaybeDetachIdle(pid_t pid) {
  if (native_inflight_.load() > 0 || !OnRequestFor(pid)) return false;
  const absl::Time last = absl::FromUnixNanos(native_last_request_ns_.load());
  if (absl::Now() - last < native_opts_.idle_detach) return false;
  std::shared_ptr<NativeHeapSource> old;
  {
    std::lock_guard<std::mutex> l(mu_);
    old = std::move(native_);
  }
  native_idle_detaches_.fetch_add(1);
  fprintf(stderr,
          "pprof-sidecar: malloc profiling of pid %d: no heap/allocs/native_heap request for %s: "
          "probes detached\n",
          static_cast<int>(pid), absl::FormatDuration(native_opts_.idle_detach).c_str());
  return true;  // `old` detaches here unless a request still holds it
}

void HeapProfiler::SetTarget(std::optional<pid_t> pid) {
  if (!native_factory_) return;
  std::lock_guard<std::mutex> nl(native_mu_);
  std::shared_ptr<NativeHeapSource> old, same;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (native_ && pid && native_->pid() == *pid) {
      same = native_;
    } else {
      old = std::move(native_);
    }
  }
  if (same) {
    if (MaybeDetachIdle(*pid)) return;
    // Re-reading /proc/PID/maps holds the target's mmap lock for reading: with many mappings
    // that is milliseconds, during which the target's mmap/munmap wait. Rechecks are spaced so
    // that they take at most 0.1 % of the time (every call for a cheap read).
    const absl::Time now = absl::Now();
    if (now < next_recheck_) return;
    absl::StatusOr<int> added = same->ProbeNewMappings();
    next_recheck_ = now + 1000 * (absl::Now() - now);
    if (!added.ok()) {
      fprintf(stderr, "pprof-sidecar: malloc profiling of pid %d: new mappings: %s\n",
              static_cast<int>(*pid), std::string(added.status().message()).c_str());
    } else if (*added > 0) {
      native_late_probes_.fetch_add(*added);
      fprintf(stderr,
              "pprof-sidecar: malloc profiling of pid %d: %d newly mapped allocator "
              "functions probed; %s\n",
              static_cast<int>(*pid), *added, same->Describe().c_str());
    }
    return;
  }
  old.reset();  // detaches (unless a request still holds it)
  if (!pid || native_opts_.policy != MallocPolicy::kAlways) return;
  // A failed attach is retried on later calls for the same pid, backing off 1 s .. 64 s.
  const absl::Time now = absl::Now();
  if (*pid == failed_pid_ && now < next_retry_) return;
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Exe(*pid);
  if (!exe.ok() || (*exe)->is_go()) return;
  absl::StatusOr<std::unique_ptr<NativeHeapSource>> src = native_factory_(*pid);
  if (!src.ok()) {
    native_attach_errors_.fetch_add(1);
    retry_backoff_ =
        *pid == failed_pid_ ? std::min(retry_backoff_ * 2, absl::Seconds(64)) : absl::Seconds(1);
    failed_pid_ = *pid;
    next_retry_ = now + retry_backoff_;
    fprintf(stderr, "pprof-sidecar: malloc profiling of pid %d: %s (retrying in %s)\n",
            static_cast<int>(*pid), std::string(src.status().message()).c_str(),
            absl::FormatDuration(retry_backoff_).c_str());
    std::lock_guard<std::mutex> l(mu_);
    native_last_error_ = src.status();
    return;
  }
  failed_pid_ = 0;
  next_recheck_ = absl::InfinitePast();
  native_attaches_.fetch_add(1);
  std::lock_guard<std::mutex> l(mu_);
  native_last_error_ = absl::OkStatus();
  native_ = std::shared_ptr<NativeHeapSource>(std::move(*src));
}

absl::StatusOr<std::shared_ptr<NativeHeapSource>> HeapProfiler::NativeFor(pid_t pid,
                                                                          bool* attached) {
  *attached = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (native_ && native_->pid() == pid) return native_;
  }
  std::lock_guard<std::mutex> nl(native_mu_);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (native_ && native_->pid() == pid) return native_;
  }
  absl::StatusOr<std::unique_ptr<NativeHeapSource>> src = native_factory_(pid);
  if (!src.ok()) {
    native_attach_errors_.fetch_add(1);
    std::lock_guard<std::mutex> l(mu_);
    native_last_error_ = src.status();
    return src.status();
  }
  native_attaches_.fetch_add(1);
  next_recheck_ = absl::InfinitePast();
  *attached = true;
  std::lock_guard<std::mutex> l(mu_);
  native_last_error_ = absl::OkStatus();
  native_ = std::shared_ptr<NativeHeapSource>(std::move(*src));
  return native_;
}

void HeapProfiler::AddNativeComments(const NativeHeapSource& src, bool attached_now, bool go_target,
                                     const HeapRequest& req, HeapProfileParams* params) const {
  const std::string since =
      absl::FormatTime(absl::RFC3339_sec, src.attached_at(), absl::UTCTimeZone());
  const bool on_request = native_opts_.policy == MallocPolicy::kOnRequest;
  params->comments.push_back(absl::StrCat(
      "pprof-sidecar: malloc profiling policy ", MallocPolicyName(native_opts_.policy),
      go_target ? absl::StrCat(" (a Go target's C allocations are sampled on request: probes "
                               "attached at the first native_heap/native_allocs request, "
                               "detached after ",
                               absl::FormatDuration(native_opts_.idle_detach), " without one)")
      : on_request
          ? absl::StrCat(" (probes attached at the first heap/allocs request, detached after ",
                         absl::FormatDuration(native_opts_.idle_detach), " without one)")
          : " (probes attached while the target exists)",
      "; attached at ", since, ": alloc_* and inuse_* count allocations since ", since, "; ",
      src.Describe()));
  if (attached_now && req.delta <= absl::ZeroDuration()) {
    params->comments.push_back(
        "pprof-sidecar: this request attached the malloc probes: it shows only the allocations "
        "made since (nearly none); ask again later, or ask seconds=N for the allocations of the "
        "next N seconds");
  }
  const MallocSamplerStats st = src.stats();
  params->comments.push_back(absl::StrCat(
      "pprof-sidecar: malloc sampler counters: calls ", st.calls, ", sampled ", st.sampled,
      ", recorded ", st.recorded, ", tracked live ", st.live, ", frees of sampled ",
      st.frees_tracked, "; lost: live map full ", st.live_full, ", ring buffer full ",
      st.ringbuf_drops, " allocs / ", st.free_drops, " frees, stack errors ", st.stack_errors,
      ", pending full ", st.pending_full, ", unmatched returns ", st.pending_mismatch,
      ", bucket limit ", st.bucket_overflow, "; nested allocator calls not recounted ", st.nested));
  params->comments.push_back(absl::StrCat(
      "pprof-sidecar: stacks of sampled allocations: ", st.unwound, " of ", st.recorded,
      " unwound with CFI from a copy of the caller's stack (whatever its frame pointers), the "
      "rest are frame-pointer walks; stack copies failed: ",
      st.stack_copy_errors));
  if (req.gc) {
    params->comments.push_back("pprof-sidecar: gc=1 has no meaning for a malloc heap: ignored");
  }
}

absl::StatusOr<std::string> HeapProfiler::CollectNative(pid_t pid, const HeapRequest& req) {
  auto fail = [this](absl::Status st) {
    errors_.fetch_add(1);
    return st;
  };
  // The request keeps the probes attached while it runs and for idle_detach after it.
  struct InFlight {
    HeapProfiler* h;
    explicit InFlight(HeapProfiler* hp) : h(hp) {
      Touch();
      h->native_inflight_.fetch_add(1);
    }
    ~InFlight() {
      Touch();
      h->native_inflight_.fetch_sub(1);
    }
    void Touch() { h->native_last_request_ns_.store(absl::ToUnixNanos(absl::Now())); }
  } inflight(this);
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Exe(pid);
  if (!exe.ok()) return fail(exe.status());
  if ((*exe)->is_go() && !MapsCAllocator(pid)) {  // nothing to probe: no attach attempt
    return fail(NativeAttachError(pid, absl::NotFoundError("no C library mapped")));
  }
  bool attached_now = false;
  absl::StatusOr<std::shared_ptr<NativeHeapSource>> src = NativeFor(pid, &attached_now);
  if (!src.ok()) return fail(NativeAttachError(pid, src.status()));
  const absl::Time start = absl::Now();
  HeapSnapshot snap = (*src)->Snapshot();
  HeapProfileParams params;
  params.kind = req.kind;
  params.comments = req.comments;
  params.native = true;
  if (req.delta > absl::ZeroDuration()) {
    if (absl::Status st = SleepDelta(req, &params); !st.ok()) return fail(st);
    HeapSnapshot snap1 = (*src)->Snapshot();
    bool replaced;
    {
      std::lock_guard<std::mutex> l(mu_);
      replaced = native_.get() != src->get();
    }
    if (replaced) {
      return fail(
          absl::AbortedError(absl::StrCat("pid ", pid,
                                          " exited or the malloc sampler was replaced during the "
                                          "delta window")));
    }
    params.time = absl::Now();
    params.duration = params.time - start;
    snap = SubtractHeap(snap1, snap);
    params.comments.push_back(
        "pprof-sidecar: delta profile: malloc sampler buckets at the start and the end of the "
        "window, subtracted");
  } else {
    params.time = start;
  }
  AddNativeComments(**src, attached_now, (*exe)->is_go(), req, &params);
  absl::StatusOr<std::string> prof = BuildHeapProfile(snap, pid, params, symbolizer_, nullptr);
  if (!prof.ok()) return fail(prof.status());
  profiles_.fetch_add(1);
  return prof;
}

absl::Status HeapProfiler::NativeAttachError(pid_t pid, const absl::Status& st) {
  absl::StatusOr<std::shared_ptr<const GoExecutable>> exe = Exe(pid);
  if (!exe.ok()) return exe.status();  // gone
  if (!(*exe)->is_go()) {
    return absl::Status(st.code(), absl::StrCat("pid ", pid,
                                                " is not a Go program and its allocator could not "
                                                "be probed: ",
                                                st.message()));
  }
  if (absl::IsNotFound(st)) {  // the process is there: nothing to probe
    return absl::UnimplementedError(absl::StrCat(
        "pid ", pid,
        " is a Go program that maps no C allocator (built without cgo, or with its C library "
        "linked statically): it has no C allocations to sample; its Go heap is the heap and "
        "allocs profiles (",
        st.message(), ")"));
  }
  return absl::Status(st.code(), absl::StrCat("pid ", pid,
                                              " (a Go program): its C allocator could not be "
                                              "probed: ",
                                              st.message()));
}

HeapProfilerStats HeapProfiler::stats() const {
  HeapProfilerStats s;
  s.profiles = profiles_.load();
  s.errors = errors_.load();
  s.located_by_symtab = by_symtab_.load();
  s.located_by_code = by_code_.load();
  s.last_buckets = last_buckets_.load();
  s.last_read_micros = last_read_micros_.load();
  s.native_attaches = native_attaches_.load();
  s.native_attach_errors = native_attach_errors_.load();
  s.native_late_probes = native_late_probes_.load();
  s.native_idle_detaches = native_idle_detaches_.load();
  std::shared_ptr<NativeHeapSource> n;
  {
    std::lock_guard<std::mutex> l(mu_);
    n = native_;
  }
  if (n) {
    s.native_attached = true;
    s.native = n->stats();
  }
  return s;
}

}  // namespace pprof_sidecar
