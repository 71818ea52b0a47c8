#include "agent/goprofile/contention_source.h"

#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "pprof_encoder/builder.h"

namespace pprof_sidecar {
namespace {

constexpr size_t kBucketHeaderWords = 6;  // next, allnext, typ, hash, size, nstk
constexpr uint64_t kBlockBucket = 2, kMutexBucket = 3;
constexpr size_t kMaxBuckets = 1 << 20, kMaxStack = 1024;

std::vector<GoVarSpec> Specs(ContentionKind kind) {
  if (kind == ContentionKind::kBlock) {
    return {{"runtime.bbuckets",
             8,
             {GoDataClass::kBss},
             {"runtime.stkbucket", "runtime.BlockProfile", "runtime.blockProfileInternal",
              "runtime.pprof_blockProfileInternal"},
             true},
            {"runtime.blockprofilerate",
             8,
             {GoDataClass::kNoptrBss},
             {"runtime.SetBlockProfileRate", "runtime.blockevent", "runtime.blocksampled",
              "runtime.saveblockevent", "runtime.chanrecv", "runtime.chansend", "runtime.selectgo",
              "runtime.semacquire1"}}};
  }
  return {{"runtime.xbuckets",
           8,
           {GoDataClass::kBss},
           {"runtime.stkbucket", "runtime.MutexProfile", "runtime.mutexProfileInternal",
            "runtime.pprof_mutexProfileInternal"},
           true},
          {"runtime.mutexprofilerate",
           8,
           {GoDataClass::kNoptrBss},
           {"runtime.SetMutexProfileFraction", "runtime.mutexevent", "runtime.semacquire1",
            "runtime/pprof.writeProfileInternal", "runtime/pprof.scaleMutexProfile", "sync.event",
            "runtime.(*lockTimer).begin", "runtime.(*mLockProfile).store",
            "runtime.(*mLockProfile).storeSlow", "runtime.unlock2"}}};
}

const char* Name(ContentionKind k) { return k == ContentionKind::kBlock ? "block" : "mutex"; }

int64_t MonoNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

int64_t CyclesPerSecond() {
  static const int64_t cps = [] {
    const int64_t t0 = MonoNanos();
    const uint64_t c0 = __rdtsc();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const int64_t t1 = MonoNanos();
    const uint64_t c1 = __rdtsc();
    return static_cast<int64_t>(static_cast<double>(c1 - c0) * 1e9 / static_cast<double>(t1 - t0));
  }();
  return cps;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> LocateContentionVars(const GoBinary& bin,
                                                                   ContentionKind kind) {
  absl::StatusOr<std::vector<GoVarLocation>> locs =
      LocateGoVars(bin.elf(), bin.pcln(), Specs(kind));
  if (!locs.ok()) {
    return absl::NotFoundError(absl::StrCat(
        "cannot locate the Go runtime's ", Name(kind), " profile in a binary built with ",
        bin.go_version().empty() ? "an unknown Go" : bin.go_version(), ": ",
        locs.status().message()));
  }
  return std::make_pair((*locs)[0].addr, (*locs)[1].addr);
}

absl::StatusOr<ContentionSnapshot> ReadContention(MemoryReader& mem, const GoBinary& bin,
                                                  uint64_t bias, ContentionKind kind) {
  absl::StatusOr<std::pair<uint64_t, uint64_t>> vars = LocateContentionVars(bin, kind);
  if (!vars.ok()) return vars.status();
  ContentionSnapshot snap;
  absl::StatusOr<uint64_t> rate = mem.ReadU64(vars->second + bias);
  if (!rate.ok()) return rate.status();
  snap.rate = static_cast<int64_t>(*rate);
  absl::StatusOr<uint64_t> head = mem.ReadU64(vars->first + bias);
  if (!head.ok()) return head.status();
  const uint64_t want = kind == ContentionKind::kBlock ? kBlockBucket : kMutexBucket;
  const GoImage img{&bin, bias, ""};
  std::vector<uint64_t> w;
  for (uint64_t b = *head; b != 0;) {
    if (snap.records.size() >= kMaxBuckets || b % 8 != 0) {
      return absl::DataLossError(
          absl::StrCat(Name(kind), " bucket list broken at 0x", absl::Hex(b)));
    }
    uint64_t hdr[kBucketHeaderWords];
    if (absl::Status st = mem.Read(b, hdr, sizeof(hdr)); !st.ok()) return st;
    if (hdr[2] != want || hdr[5] > kMaxStack) {
      return absl::DataLossError(absl::StrCat("0x", absl::Hex(b), " is not a ", Name(kind),
                                              " profile bucket (type ", hdr[2], ")"));
    }
    w.resize(hdr[5] + 2);
    if (absl::Status st = mem.Read(b + sizeof(hdr), w.data(), w.size() * 8); !st.ok()) return st;
    ContentionRecord r;
    r.bucket = b;
    double count;
    memcpy(&count, &w[hdr[5]], 8);
    r.count = std::max<int64_t>(1, static_cast<int64_t>(count));
    r.cycles = static_cast<int64_t>(w[hdr[5] + 1]);
    // Go 1.23+ record frame-pointer stacks (physical frames); runtime/pprof expands their
    // inlined callers when it writes them. Earlier releases record tracebackPCs already.
    std::vector<uint64_t> stk(w.begin(), w.begin() + hdr[5]);
    if (bin.minor() >= 23) {
      r.pcs = GoExpandInlined(img, stk);
    } else {
      r.pcs = std::move(stk);
    }
    snap.records.push_back(std::move(r));
    b = hdr[1];
  }
  std::stable_sort(
      snap.records.begin(), snap.records.end(),
      [](const ContentionRecord& a, const ContentionRecord& b) { return a.cycles > b.cycles; });
  return snap;
}

namespace {

ContentionSnapshot Subtract(const ContentionSnapshot& b, const ContentionSnapshot& a) {
  std::map<uint64_t, const ContentionRecord*> old;
  for (const ContentionRecord& r : a.records) old[r.bucket] = &r;
  ContentionSnapshot d;
  d.rate = b.rate;
  for (const ContentionRecord& r : b.records) {
    ContentionRecord x = r;
    auto it = old.find(r.bucket);
    if (it != old.end()) {
      x.count -= it->second->count;
      x.cycles -= it->second->cycles;
    }
    if (x.count == 0 && x.cycles == 0) continue;
    d.records.push_back(std::move(x));
  }
  return d;
}

std::string Text(const GoImage& img, ContentionKind kind, const ContentionSnapshot& s,
                 const std::string& note) {
  std::vector<std::string> lines;
  lines.push_back(kind == ContentionKind::kBlock ? "--- contention:" : "--- mutex:");
  lines.push_back(absl::StrCat("cycles/second=", CyclesPerSecond()));
  if (kind == ContentionKind::kMutex) lines.push_back(absl::StrCat("sampling period=", s.rate));
  for (const ContentionRecord& r : s.records) {
    std::string head = absl::StrCat(r.cycles, " ", r.count, " @");
    for (uint64_t pc : r.pcs) absl::StrAppendFormat(&head, " 0x%x", pc);
    lines.push_back(std::move(head));
    AppendStackRecordLines(img, r.pcs, true, &lines);
  }
  std::string out = TabFormat(lines);
  if (!note.empty()) absl::StrAppend(&out, "# ", note, "\n");
  return out;
}

absl::StatusOr<std::string> Proto(const GoImage& img, ProcessSymbolizer* symbolizer,
                                  ContentionKind kind, const ContentionSnapshot& s,
                                  const ProfileRequest& req, const std::string& note) {
  pprof_encoder::Builder b;
  b.SetPeriodType("contentions", "count");
  b.SetPeriod(1);
  b.AddSampleType("contentions", "count");
  b.AddSampleType("delay", "nanoseconds");
  b.SetTimeNanos(absl::ToUnixNanos(absl::Now()));
  b.SetDurationNanos(absl::ToInt64Nanoseconds(req.seconds));
  for (const std::string& c : req.comments) b.AddComment(c);
  if (!note.empty()) b.AddComment(note);
  const double ghz = static_cast<double>(CyclesPerSecond()) / 1e9;
  // Go 1.19's runtime/pprof multiplied mutex values by the sampling period.
  const int64_t scale = kind == ContentionKind::kMutex && img.bin->minor() < 20 ? s.rate : 1;
  LocationTable table(&b, symbolizer);
  GoStackLocations locations(img, &table, table.ImageOf(static_cast<uint32_t>(req.target->pid)));
  for (const ContentionRecord& r : s.records) {
    b.AddSample(
        locations.Of(r.pcs),
        {r.count * scale, static_cast<int64_t>(static_cast<double>(r.cycles) / ghz) * scale});
  }
  for (const std::string& e : table.MapsErrors()) b.AddComment(e);
  return b.Finish();
}

}  // namespace

ContentionSource::ContentionSource(ContentionKind kind, std::shared_ptr<GoBinaryCache> cache,
                                   ProcessSymbolizer* symbolizer, ContentionRateWrite write)
    : kind_(kind), cache_(std::move(cache)), symbolizer_(symbolizer), write_(write) {
  info_.name = Name(kind);
  info_.description = kind == ContentionKind::kBlock
                          ? "Stack traces that led to blocking on synchronization primitives"
                          : "Stack traces of holders of contended mutexes";
  info_.seconds = ProfileKindInfo::Seconds::kDelta;
  info_.debug_levels = {0, 1, 2};
  info_.filename = Name(kind);
  info_.error_prefix = absl::StrCat("Could not get ", Name(kind), " profile");
}

absl::Status ContentionSource::Availability(const std::optional<ProcessInfo>& target) const {
  if (!target) return absl::UnavailableError("no target process");
  return cache_->Check(target->pid);
}

absl::StatusOr<ContentionSnapshot> ContentionSource::Read(const GoProcess& p) {
  return ReadContention(*p.mem, *p.bin, p.bias, kind_);
}

uint64_t ContentionSource::EnabledRate() const {
  if (kind_ == ContentionKind::kMutex) {
    return static_cast<uint64_t>(std::max<int64_t>(1, write_.mutex_fraction));
  }
  // SetBlockProfileRate: 1 records every event, else the rate in ns converted to ticks (Go's
  // estimate of the TSC frequency; the agent measures its own).
  if (write_.block_rate_ns <= 1) return 1;
  const double ticks =
      static_cast<double>(write_.block_rate_ns) * static_cast<double>(CyclesPerSecond()) / 1e9;
  return std::max<uint64_t>(1, static_cast<uint64_t>(ticks));
}

bool ContentionSource::BeginRateWindow(GoProcess& p, std::string* why) {
  std::lock_guard<std::mutex> l(write_mu_);
  if (writers_ > 0) {
    if (write_pid_ != p.pid) {
      *why = "another process's window holds the write";
      return false;
    }
    ++writers_;
    return true;
  }
  absl::StatusOr<std::pair<uint64_t, uint64_t>> vars = LocateContentionVars(*p.bin, kind_);
  if (!vars.ok()) {
    *why = std::string(vars.status().message());
    return false;
  }
  const uint64_t addr = vars->second + p.bias;
  absl::StatusOr<uint64_t> old = p.mem->ReadU64(addr);
  if (!old.ok() || *old != 0) {
    *why = old.ok() ? "the target enabled it meanwhile" : std::string(old.status().message());
    return false;
  }
  const uint64_t value = EnabledRate();
  if (absl::Status st = p.mem->Write(addr, &value, sizeof(value)); !st.ok()) {
    *why = std::string(st.message());
    fprintf(stderr, "pprof-sidecar: pid %d: writing runtime.%sprofilerate failed: %s\n", p.pid,
            Name(kind_), why->c_str());
    return false;
  }
  rate_writes_.fetch_add(1);
  fprintf(stderr,
          "pprof-sidecar: pid %d: wrote runtime.%sprofilerate = %llu at 0x%llx (was 0) for a "
          "%s profile window (--go_contention_rate_write)\n",
          p.pid, Name(kind_), static_cast<unsigned long long>(value),
          static_cast<unsigned long long>(addr), Name(kind_));
  writers_ = 1;
  write_pid_ = p.pid;
  write_addr_ = addr;
  write_old_ = *old;
  write_value_ = value;
  return true;
}

void ContentionSource::EndRateWindow(GoProcess& p) {
  std::lock_guard<std::mutex> l(write_mu_);
  if (writers_ == 0 || --writers_ > 0) return;
  absl::StatusOr<uint64_t> now = p.mem->ReadU64(write_addr_);
  if (!now.ok() || *now != write_value_) {
    fprintf(stderr, "pprof-sidecar: pid %d: runtime.%sprofilerate left as it is: %s\n", p.pid,
            Name(kind_),
            now.ok() ? "the target changed it during the window"
                     : std::string(now.status().message()).c_str());
    return;
  }
  absl::Status st = p.mem->Write(write_addr_, &write_old_, sizeof(write_old_));
  rate_writes_.fetch_add(1);
  fprintf(stderr, "pprof-sidecar: pid %d: restored runtime.%sprofilerate = %llu%s%s\n", p.pid,
          Name(kind_), static_cast<unsigned long long>(write_old_),
          st.ok() ? "" : ": failed: ", st.ok() ? "" : std::string(st.message()).c_str());
}

absl::StatusOr<ProfileResponse> ContentionSource::Collect(const ProfileRequest& req) {
  if (!req.target) return absl::UnavailableError("no target process");
  absl::StatusOr<GoProcess> p = cache_->Open(req.target->pid);
  if (!p.ok()) return p.status();
  absl::StatusOr<ContentionSnapshot> s = Read(*p);
  std::string wrote_note, why;
  if (s.ok() && req.seconds > absl::ZeroDuration()) {
    // The opt-in write: only for a window, only on a target that never enabled this kind.
    const bool wrote = write_.enabled && s->rate == 0 && BeginRateWindow(*p, &why);
    if (wrote) {
      wrote_note = absl::StrCat(
          "pprof-sidecar: the target had not enabled ", Name(kind_), " profiling: the agent set ",
          kind_ == ContentionKind::kBlock ? "runtime.blockprofilerate" : "runtime.mutexprofilerate",
          " to ", EnabledRate(), " for this window (--go_contention_rate_write) and restored 0");
    }
    const absl::Time end = absl::Now() + req.seconds;
    bool cancelled = false;
    while (absl::Now() < end && !req.cut_short()) {
      if (req.cancelled()) {
        cancelled = true;
        break;
      }
      absl::SleepFor(std::min(absl::Milliseconds(50), end - absl::Now()));
    }
    // Read before the restore: the delta then carries the rate it was recorded at.
    absl::StatusOr<ContentionSnapshot> s2 =
        cancelled ? absl::CancelledError("client went away") : Read(*p);
    if (wrote) EndRateWindow(*p);
    if (cancelled) return s2.status();
    if (s2.ok())
      s = Subtract(*s2, *s);
    else
      s = s2.status();
  }
  if (!s.ok()) {
    errors_.fetch_add(1);
    return absl::Status(s.status().code(),
                        absl::StrCat("pid ", req.target->pid, ": ", s.status().message()));
  }
  std::string note = wrote_note;
  if (note.empty() && s->rate == 0 && s->records.empty()) {
    note = absl::StrCat("pprof-sidecar: empty because the target never enabled ", Name(kind_),
                        " profiling (",
                        kind_ == ContentionKind::kBlock ? "runtime.SetBlockProfileRate"
                                                        : "runtime.SetMutexProfileFraction",
                        " was not called: the runtime records nothing)");
    if (!why.empty()) absl::StrAppend(&note, "; the opt-in rate write was refused: ", why);
  }
  const GoImage img{p->bin.get(), p->bias, p->exe};
  ProfileResponse resp;
  if (req.debug > 0) {
    resp.body = Text(img, kind_, *s, note);
    resp.content_type = "text/plain; charset=utf-8";
  } else {
    absl::StatusOr<std::string> pb = Proto(img, symbolizer_, kind_, *s, req, note);
    if (!pb.ok()) return pb.status();
    resp.body = std::move(*pb);
  }
  profiles_.fetch_add(1);
  return resp;
}

void ContentionSource::WriteMetrics(const std::optional<ProcessInfo>& target,
                                    MetricsWriter* w) const {
  w->Counter(absl::StrCat("pprof_sidecar_", Name(kind_), "_profiles_total"),
             absl::StrCat(info_.name, " profiles served."), static_cast<double>(profiles_.load()));
  w->Counter(absl::StrCat("pprof_sidecar_", Name(kind_), "_profile_errors_total"),
             absl::StrCat(info_.name, " profile requests failed."),
             static_cast<double>(errors_.load()));
  w->Counter(absl::StrCat("pprof_sidecar_", Name(kind_), "_rate_writes_total"),
             absl::StrCat("Writes of the target's ", Name(kind_),
                          " profiling rate (--go_contention_rate_write): set and restore."),
             static_cast<double>(rate_writes_.load()));
}

}  // namespace pprof_sidecar
