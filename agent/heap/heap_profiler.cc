#include "agent/heap/heap_profiler.h"

#include <elf.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/goruntime/process_memory.h"
#include "agent/heap/allocator_probes.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_buildinfo.h"
#include "agent/symbolize/go_pclntab.h"
#include "agent/symbolize/proc_maps.h"

namespace pprof_sidecar {

// What is cached per executable: where the variables are and how to relocate them.
struct HeapProfiler::ExeInfo {
  std::string key;
  uint64_t dev_major = 0, dev_minor = 0, inode = 0;
  bool is_go = false;
  std::string go_version;      // from the build info, if any
  absl::Status pcln_status;    // why the pclntab cannot be read, if it cannot
  absl::Status locate_status;  // why vars are unknown, if they are
  GoHeapVars vars;             // link-time
  bool pie = false;
  std::vector<ElfSegment> segments;
};

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

HeapProfiler::HeapProfiler(ProcessSymbolizer* symbolizer, GoHeapReadLimits limits)
    : symbolizer_(symbolizer), limits_(limits) {}

HeapProfiler::~HeapProfiler() = default;

absl::StatusOr<std::shared_ptr<const HeapProfiler::ExeInfo>> HeapProfiler::Exe(pid_t pid) {
  const std::string exe = absl::StrCat("/proc/", pid, "/exe");
  struct stat st;
  if (stat(exe.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("process ", pid, " exited (", exe, ")"));
  }
  const std::string key = absl::StrCat(major(st.st_dev), ":", minor(st.st_dev), ":", st.st_ino);
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = exes_.find(key);
    if (it != exes_.end()) return it->second;
  }
  auto info = std::make_shared<ExeInfo>();
  info->key = key;
  info->dev_major = major(st.st_dev);
  info->dev_minor = minor(st.st_dev);
  info->inode = st.st_ino;
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(exe);
  if (!elf.ok()) return elf.status();
  info->pie = (*elf)->type() == ET_DYN;
  info->segments = (*elf)->load_segments();
  absl::StatusOr<std::string> version = GoBuildVersion(**elf);
  if (version.ok()) info->go_version = *version;
  absl::StatusOr<std::unique_ptr<GoPclntab>> pcln = GoPclntab::FromElf(**elf);
  if (pcln.ok()) {
    info->is_go = true;
    absl::StatusOr<GoHeapVars> vars = LocateGoHeapVars(**elf, **pcln);
    if (vars.ok()) {
      info->vars = *vars;
      (vars->method == "symtab" ? by_symtab_ : by_code_).fetch_add(1);
    } else {
      info->locate_status = vars.status();
    }
  } else if (!absl::IsNotFound(pcln.status()) || version.ok()) {
    // A Go binary (build info) whose pclntab this agent cannot read: a newer Go release.
    info->is_go = version.ok();
    info->pcln_status = absl::Status(
        pcln.status().code(),
        absl::StrCat(version.ok() ? absl::StrCat("a ", *version, " binary: ") : "",
                     "cannot read its Go symbol table (.gopclntab): ", pcln.status().message()));
    info->locate_status = info->pcln_status;
  }
  std::lock_guard<std::mutex> l(mu_);
  if (exes_.size() >= 16) exes_.clear();  // targets are few; bound the cache crudely
  exes_[key] = info;
  return std::shared_ptr<const ExeInfo>(info);
}

absl::StatusOr<HeapSnapshot> HeapProfiler::ReadGoSnapshot(pid_t pid, std::string* how,
                                                          const GoHeapReadLimits* limits) {
  absl::StatusOr<std::shared_ptr<const ExeInfo>> exe = Exe(pid);
  if (!exe.ok()) return exe.status();
  const ExeInfo& info = **exe;
  if (!info.is_go) {
    if (!info.locate_status.ok()) return info.locate_status;
    return absl::UnimplementedError(
        absl::StrCat("pid ", pid,
                     " is not a Go program: heap profiles are read from the Go runtime for Go "
                     "targets, from the malloc sampler for others (disabled here)"));
  }
  if (!info.locate_status.ok()) {
    return absl::Status(info.locate_status.code(),
                        absl::StrCat("pid ", pid, ": ", info.locate_status.message()));
  }
  uint64_t bias = 0;
  if (info.pie) {
    absl::StatusOr<uint64_t> b = GoExeLoadBias(pid, info.inode, info.segments);
    if (!b.ok()) return b.status();
    bias = *b;
  }
  GoHeapVars rt = info.vars;
  rt.mbuckets += bias;
  rt.mprof_cycle += bias;
  rt.mem_profile_rate += bias;
  if (how) {
    const GoHeapVars& v = info.vars;
    *how =
        absl::StrCat(v.go_version.empty() ? "Go" : v.go_version, " runtime variables located via ",
                     v.method, v.census.empty() ? "" : " (anchors agreeing " + v.census + ")",
                     info.pie ? absl::StrCat(", PIE load bias 0x", absl::Hex(bias)) : "");
  }
  absl::StatusOr<std::unique_ptr<ProcessMemory>> mem = ProcessMemory::Open(pid);
  if (!mem.ok()) return mem.status();
  const absl::Time t0 = absl::Now();
  absl::StatusOr<HeapSnapshot> snap = ReadGoHeap(**mem, rt, limits ? *limits : limits_);
  if (!snap.ok()) {
    return absl::Status(snap.status().code(),
                        absl::StrCat("pid ", pid, ": ", snap.status().message()));
  }
  if (limits == nullptr) {  // a whole read, not a probe
    last_read_micros_.store(absl::ToInt64Microseconds(absl::Now() - t0));
    last_buckets_.store(snap->records.size());
  }
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
  absl::StatusOr<HeapSnapshot> snap = ReadGoSnapshot(pid, &how);
  if (!snap.ok() && absl::IsUnimplemented(snap.status()) && native_factory_) {
    return CollectNative(pid, req);
  }
  if (!snap.ok()) return fail(snap.status());
  HeapProfileParams params;
  params.kind = req.kind;
  params.comments = req.comments;
  if (req.delta > absl::ZeroDuration()) {
    absl::StatusOr<std::shared_ptr<const ExeInfo>> before = Exe(pid);
    if (absl::Status st = SleepDelta(req, &params); !st.ok()) return fail(st);
    absl::StatusOr<std::shared_ptr<const ExeInfo>> after = Exe(pid);
    if (!before.ok() || !after.ok() || (*before)->key != (*after)->key) {
      return fail(absl::AbortedError(
          absl::StrCat("pid ", pid, " exited or exec'd during the delta window")));
    }
    absl::StatusOr<HeapSnapshot> snap1 = ReadGoSnapshot(pid, nullptr);
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
  absl::StatusOr<std::shared_ptr<const ExeInfo>> exe = Exe(pid);
  if (!exe.ok()) return exe.status();
  GoTargetInfo info;
  info.is_go = (*exe)->is_go;
  info.go_version = (*exe)->go_version;
  info.symbols = (*exe)->pcln_status;
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
  absl::StatusOr<std::shared_ptr<const ExeInfo>> exe = Exe(pid);
  return exe.ok() && (*exe)->is_go;
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
  absl::StatusOr<std::shared_ptr<const ExeInfo>> exe = Exe(*pid);
  if (!exe.ok() || (*exe)->is_go) return;
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
  absl::StatusOr<std::shared_ptr<const ExeInfo>> exe = Exe(pid);
  if (!exe.ok()) return fail(exe.status());
  if ((*exe)->is_go && !MapsCAllocator(pid)) {  // nothing to probe: no attach attempt
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
  AddNativeComments(**src, attached_now, (*exe)->is_go, req, &params);
  absl::StatusOr<std::string> prof = BuildHeapProfile(snap, pid, params, symbolizer_, nullptr);
  if (!prof.ok()) return fail(prof.status());
  profiles_.fetch_add(1);
  return prof;
}

absl::Status HeapProfiler::NativeAttachError(pid_t pid, const absl::Status& st) {
  absl::StatusOr<std::shared_ptr<const ExeInfo>> exe = Exe(pid);
  if (!exe.ok()) return exe.status();  // gone
  if (!(*exe)->is_go) {
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
