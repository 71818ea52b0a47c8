#include "agent/profile/cpu_profile.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/profile/location_table.h"
#include "agent/symbolize/go_code.h"
#include "agent/symbolize/kallsyms.h"
#include "agent/symbolize/proc_maps.h"
#include "agent/unwind/cfi.h"
#include "agent/unwind/unwinder.h"
#include "pprof_encoder/builder.h"

namespace pprof_sidecar {

bool IsThreadRootFunction(const std::string& name) {
  static const std::set<std::string> kRoots = {
      // runtime.mcall runs its function on g0 with no way back (it clears BP): Go's traceback
      // ends g0 stacks there too.
      "runtime.mcall",
      "runtime.goexit",
      "runtime.main",
      "runtime.mstart",
      "runtime.rt0_go",
      "runtime.mstart0",
      "_start",
      "__libc_start_main",
      "__libc_start_call_main",
      "clone",
      "clone3",
      "start_thread",
      "__clone",
      "__clone3",
      "__GI___clone",
      "__GI___clone3"};
  return kRoots.count(name) > 0;
}

namespace {

// CFI tables, built once per cached binary.
// What the unwinder needs of a binary beyond its symbols, built once per cached binary.
struct UnwindTables {
  std::unique_ptr<CfiTable> cfi;  // null: no CFI
  GoCgoCall cgo;                  // zero: not a cgo binary (or not understood)
};

std::shared_ptr<const void> MakeUnwindTables(const ElfFile& elf, const GoPclntab* go) {
  auto t = std::make_shared<UnwindTables>();
  auto cfi = CfiTable::FromElf(elf, /*use_debug_frame=*/go == nullptr);
  if (cfi.ok()) t->cfi = *std::move(cfi);
  if (go != nullptr) {
    absl::StatusOr<GoCgoCall> cgo = FindGoCgoCall(elf, *go);
    if (cgo.ok()) t->cgo = *cgo;
  }
  if (t->cfi == nullptr && t->cgo.asmcgocall_return == 0) return nullptr;
  return t;
}

class SessionCodeLookup : public UnwindCodeLookup {
 public:
  explicit SessionCodeLookup(ProcessSymbolizer::Session* s) : s_(s) {}
  bool Find(uint64_t pc, Code* out) override {
    static const auto* const kFactory =
        new ProcessSymbolizer::Session::AuxFactory(MakeUnwindTables);
    ProcessSymbolizer::Session::CodeAt c;
    if (!s_->FindCode(pc, *kFactory, &c)) return false;
    const auto* t = static_cast<const UnwindTables*>(c.aux);
    *out = Code();
    out->cfi = t != nullptr ? t->cfi.get() : nullptr;
    out->go = c.go;
    out->bias = c.bias;
    if (t != nullptr && t->cgo.asmcgocall_return != 0) {
      out->elf = c.elf;
      out->cgocall_entry = t->cgo.cgocall_entry;
      out->asmcgocall_return = t->cgo.asmcgocall_return;
    }
    return true;
  }

 private:
  ProcessSymbolizer::Session* s_;
};

}  // namespace

struct SampleUnwinder::PidSession {
  std::unique_ptr<ProcessSymbolizer::Session> session;
  absl::Time created;                                               // or last found unchanged
  std::shared_ptr<const ProcessSymbolizer::MapsSnapshot> snapshot;  // of session; lazily
  size_t snapshot_binaries = 0;  // session->binaries_opened() when snapshot was taken
};

SampleUnwinder::SampleUnwinder(ProcessSymbolizer* symbolizer, absl::Duration maps_refresh)
    : symbolizer_(symbolizer), maps_refresh_(maps_refresh) {}

SampleUnwinder::~SampleUnwinder() = default;

void SampleUnwinder::Reduce(CpuSample* s,
                            std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>* maps) {
  if (symbolizer_ == nullptr) return;
  const bool unwind = !s->user_stack.empty() && s->regs.sp != 0 && s->regs.ip != 0;
  if (!unwind && maps == nullptr) return;
  if (unwind && !s->kernel_ips.empty()) {
    // Looked up once per entry stub address, not per sample.
    const uint64_t stub = s->kernel_ips.back();
    auto it = int3_entry_.find(stub);
    if (it == int3_entry_.end()) {
      if (int3_entry_.size() >= 1024) int3_entry_.clear();  // not entry stubs after all
      const Kallsyms* k = symbolizer_->kallsyms();
      std::optional<Kallsyms::Symbol> entry = k ? k->Lookup(stub) : std::nullopt;
      it = int3_entry_.emplace(stub, entry && entry->name == "asm_exc_int3").first;
    }
    if (it->second) {
      if (!s->user_ips.empty() && s->user_ips[0] == s->regs.ip) --s->user_ips[0];
      --s->regs.ip;
    }
  }
  const absl::Time now = absl::Now();
  auto& ps = pids_[s->pid];
  if (!ps || now - ps->created > maps_refresh_) {
    if (!ps) ps = std::make_unique<PidSession>();
    std::unique_ptr<ProcessSymbolizer::Session> fresh = symbolizer_->NewSession(s->pid);
    // Unchanged file mappings: keep the session, its opened binaries and its snapshot.
    if (!ps->session ||
        !(fresh->maps_error().empty() ? ps->session->SameFileMappings(*fresh) : true)) {
      ps->session = std::move(fresh);
      ps->snapshot.reset();
    }
    ps->created = now;
    // Bounded: forget pids not seen for a while (restarted targets).
    for (auto it = pids_.begin(); it != pids_.end();) {
      if (now - it->second->created > 60 * maps_refresh_) {
        it = pids_.erase(it);
      } else {
        ++it;
      }
    }
  }
  PidSession& p = *pids_[s->pid];
  if (unwind) {
    SessionCodeLookup lookup(p.session.get());
    UnwindResult r;
    r.ips.reserve(64);
    UnwindOptions opts;
    opts.fp_ips_scanned = s->fp_walk_scanned;
    Unwind(s->regs, s->user_stack, s->user_ips, &lookup, opts, &r);
    s->user_ips.assign(r.ips.begin(), r.ips.end());
    s->user_unwound = true;
    s->unwind_stitched = r.stitched_frames > 0;
    s->unwind_stop = static_cast<uint8_t>(r.stop);
    std::string().swap(s->user_stack);
  }
  if (maps != nullptr) {
    if (!p.snapshot || p.session->binaries_opened() != p.snapshot_binaries) {
      p.snapshot = p.session->Snapshot();
      p.snapshot_binaries = p.session->binaries_opened();
    }
    *maps = p.snapshot;
  }
}

void SampleUnwinder::Warm(uint32_t pid) {
  if (symbolizer_ == nullptr || pid == 0) return;
  std::unique_ptr<ProcessSymbolizer::Session> session = symbolizer_->NewSession(pid);
  auto maps = ReadProcMaps(pid);
  if (!maps.ok()) return;
  SessionCodeLookup lookup(session.get());
  for (const MapEntry& m : *maps) {
    if (!m.IsFileBacked() || !m.exec) continue;
    UnwindCodeLookup::Code code;
    lookup.Find(m.start, &code);  // opens the binary, builds its CFI table
  }
  session->ReleasePages();
  session->ResolveKernel(0, false);  // loads /proc/kallsyms once
  auto ps = std::make_unique<PidSession>();
  ps->session = std::move(session);
  ps->created = absl::Now();
  pids_[pid] = std::move(ps);
}

absl::StatusOr<std::string> BuildCpuProfile(const std::vector<CpuSample>& samples,
                                            const CpuProfileParams& params,
                                            ProcessSymbolizer* symbolizer,
                                            CpuProfileReport* report) {
  // Unwinding happens in the unwinder: copies of the samples are reduced as the agent's reader
  // thread reduces them, then built like any window's samples.
  std::vector<CpuSample> reduced = samples;
  std::vector<const CpuSample*> ptrs;
  std::vector<std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>> maps(reduced.size());
  SampleUnwinder unwinder(symbolizer);
  for (size_t i = 0; i < reduced.size(); ++i) {
    if (symbolizer != nullptr) unwinder.Reduce(&reduced[i], &maps[i]);
    ptrs.push_back(&reduced[i]);
  }
  return BuildCpuProfile(ptrs, params, symbolizer, report, &maps);
}

namespace {

// Adds the kernel part of `s` (leaf first) to `locs`. Without kernel symbols (their addresses
// are hidden from the agent without CAP_SYSLOG) a sample's kernel frames are one "[kernel]"
// frame: addresses alone would tell the reader nothing but the kernel's randomized base.
void AddKernelFrames(const CpuSample& s, bool kernel_names, LocationTable* table,
                     LocationTable::Image* image, std::vector<uint64_t>* locs,
                     CpuProfileReport* rep) {
  if (s.kernel_ips.empty()) return;
  rep->kernel_frames += s.kernel_ips.size();
  if (!kernel_names) {
    rep->kernel_frames_hidden += s.kernel_ips.size();
    locs->push_back(table->NamedLocation("[kernel]"));
    return;
  }
  for (size_t i = 0; i < s.kernel_ips.size(); ++i) {
    bool unsymbolized = false;
    locs->push_back(table->KernelLocation(image, s.kernel_ips[i], i != 0, &unsymbolized));
    if (unsymbolized) ++rep->kernel_frames_unsymbolized;
  }
}

// Adds the user part of `s` (leaf first) to `locs`; returns the outermost frame's function.
// Go wrappers in caller position are left out as Go's traceback does, unless their callee
// panicked (the wrapper is where the panic happened); a leaf is always kept.
std::string AddUserFrames(const std::vector<uint64_t>& ips, LocationTable* table,
                          LocationTable::Image* image, std::vector<uint64_t>* locs,
                          CpuProfileReport* rep) {
  const std::string* callee = nullptr;
  std::string root;
  for (size_t i = 0; i < ips.size(); ++i) {
    ++rep->user_frames;
    const LocationTable::UserFrame& f = table->User(image, ips[i], i != 0);
    if (!f.symbolized()) ++rep->user_frames_unsymbolized;
    const bool keep =
        i == 0 || !f.go_wrapper ||
        (callee != nullptr && (*callee == "runtime.gopanic" || *callee == "runtime.sigpanic" ||
                               *callee == "runtime.panicwrap"));
    if (keep) locs->push_back(table->UserLocation(image, ips[i], i != 0, ips[i]));
    callee = &f.physical;  // the table's frames are stable
    root = f.physical;
  }
  return root;
}

// Counts whether the sample's stack reaches a thread root, and if not, why.
void CountStackEnd(const CpuSample& s, const std::string& root_fn, CpuProfileReport* rep) {
  const UnwindStop stop = static_cast<UnwindStop>(s.unwind_stop);
  if (s.user_unwound) {
    ++rep->samples_unwound;
    if (s.unwind_stitched) ++rep->samples_stitched;
  }
  if (IsThreadRootFunction(root_fn) || (s.user_unwound && stop == UnwindStop::kEndOfStack)) {
    ++rep->samples_reaching_root;
    return;
  }
  if (!s.user_unwound) {
    ++rep->not_root_frame_pointers;
    return;
  }
  switch (stop) {
    case UnwindStop::kNoCfi:
      ++rep->unwind_no_cfi;
      break;
    case UnwindStop::kOutsideStack:
      ++rep->unwind_read_outside_stack;
      break;
    case UnwindStop::kDepthLimit:
      ++rep->unwind_depth_limit;
      break;
    case UnwindStop::kBadAddress:
      ++rep->unwind_bad_address;
      break;
    case UnwindStop::kStackSwitch:
      ++rep->unwind_stack_switch;
      break;
    default:
      break;
  }
}

void AddCpuComments(const CpuProfileParams& params, const CpuProfileReport& rep,
                    ProcessSymbolizer* symbolizer, const LocationTable& table,
                    pprof_encoder::Builder* b) {
  for (const auto& c : params.comments) b->AddComment(c);
  if (rep.kernel_frames_hidden > 0) {
    b->AddComment(absl::StrCat("pprof-sidecar: ", rep.kernel_frames_hidden,
                               " kernel frames shown as [kernel]: ", symbolizer->kallsyms_error(),
                               " (grant the agent CAP_SYSLOG for kernel function names)"));
  }
  const double reach =
      rep.samples ? 100.0 * rep.samples_reaching_root / static_cast<double>(rep.samples) : 100.0;
  b->AddComment(absl::StrFormat(
      "pprof-sidecar: %d samples at %d Hz%s; %.1f%% of stacks reach a thread root frame; "
      "%d of %d user frames and %d of %d kernel frames unsymbolized",
      rep.samples, params.hz, params.clock.empty() ? "" : " taken at " + params.clock, reach,
      rep.user_frames_unsymbolized, rep.user_frames, rep.kernel_frames_unsymbolized,
      rep.kernel_frames));
  b->AddComment(absl::StrFormat(
      "pprof-sidecar: unwinding: %d samples unwound from stack copies (%d completed from frame "
      "pointers), %d from frame pointers only; not reaching a root: no_cfi=%d "
      "read_outside_stack=%d depth_limit=%d bad_address=%d stack_switch=%d frame_pointers=%d",
      rep.samples_unwound, rep.samples_stitched, rep.samples - rep.samples_unwound,
      rep.unwind_no_cfi, rep.unwind_read_outside_stack, rep.unwind_depth_limit,
      rep.unwind_bad_address, rep.unwind_stack_switch, rep.not_root_frame_pointers));
  for (const std::string& e : table.MapsErrors()) b->AddComment(e);
}

}  // namespace

absl::StatusOr<std::string> BuildCpuProfile(
    const std::vector<const CpuSample*>& samples, const CpuProfileParams& params,
    ProcessSymbolizer* symbolizer, CpuProfileReport* report,
    const std::vector<std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>>* maps) {
  CpuProfileReport local;
  CpuProfileReport& rep = report ? *report : local;
  rep = CpuProfileReport();
  const int64_t period = params.hz > 0 ? 1000000000LL / params.hz : 0;
  pprof_encoder::Builder b;
  b.AddSampleType("samples", "count");
  b.AddSampleType("cpu", "nanoseconds");
  b.SetPeriodType("cpu", "nanoseconds");
  b.SetPeriod(period);
  b.SetTimeNanos(absl::ToUnixNanos(params.start));
  b.SetDurationNanos(absl::ToInt64Nanoseconds(params.duration));
  LocationTable table(&b, symbolizer);
  const bool kernel_names = symbolizer == nullptr || symbolizer->kallsyms() != nullptr;
  static const std::shared_ptr<const ProcessSymbolizer::MapsSnapshot> kNow;
  std::vector<uint64_t> locs;
  for (size_t si = 0; si < samples.size(); ++si) {
    const CpuSample& s = *samples[si];
    LocationTable::Image* image =
        table.ImageOf(s.pid, maps != nullptr && si < maps->size() ? (*maps)[si] : kNow);
    ++rep.samples;
    locs.clear();
    AddKernelFrames(s, kernel_names, &table, image, &locs, &rep);
    // A chain found by scanning the stack copy may skip frames: without the unwinder to vouch
    // for it, only the sampled pc is kept.
    std::vector<uint64_t> leaf_only;
    const std::vector<uint64_t>* ips = &s.user_ips;
    if (!s.user_unwound && s.fp_walk_scanned && ips->size() > 1) {
      leaf_only.push_back(ips->front());
      ips = &leaf_only;
    }
    if (ips->empty()) ++rep.samples_without_user_stack;
    CountStackEnd(s, AddUserFrames(*ips, &table, image, &locs, &rep), &rep);
    const int64_t w = std::max<uint32_t>(s.weight, 1);
    b.AddSample(locs, {w, w * period});
  }
  AddCpuComments(params, rep, symbolizer, table, &b);
  return b.Finish();
}

}  // namespace pprof_sidecar
