#include "agent/profile/cpu_profile.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/profile/line_infos.h"
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
      "runtime.goexit",  "runtime.main", "runtime.mstart",    "runtime.rt0_go",
      "runtime.mstart0", "_start",       "__libc_start_main", "__libc_start_call_main",
      "clone",           "clone3",       "start_thread",      "__clone",
      "__clone3",        "__GI___clone", "__GI___clone3"};
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

// Per-pid state during one build: its maps session and address -> location caches.
struct PidState {
  std::unique_ptr<ProcessSymbolizer::Session> session;
  struct UserFrame {
    uint64_t loc = 0;  // builder location id; 0 for a Go wrapper until a stack keeps it
    std::string fn;    // physical function ("" if unsymbolized)
    bool wrapper = false;
    uint64_t mapping_id = 0;
    SourceLines lines;  // kept for wrappers only, to add their location when needed
  };
  std::map<uint64_t, UserFrame> user_leaf, user_caller;
  std::vector<uint64_t> mapping_ids;  // session mapping index -> builder mapping id
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
  std::vector<const CpuSample*> ptrs;
  ptrs.reserve(samples.size());
  for (const CpuSample& s : samples) ptrs.push_back(&s);
  return BuildCpuProfile(ptrs, params, symbolizer, report);
}

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

  // One state per process image: pid, and the mappings the samples were taken under.
  std::map<std::pair<uint32_t, const void*>, PidState> pids;
  auto state_of = [&](size_t i) -> PidState& {
    const std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>* snap =
        maps != nullptr && i < maps->size() ? &(*maps)[i] : nullptr;
    PidState& ps = pids[{samples[i]->pid, snap ? snap->get() : nullptr}];
    if (!ps.session && symbolizer) {
      ps.session = snap && *snap ? symbolizer->NewSession(samples[i]->pid, *snap)
                                 : symbolizer->NewSession(samples[i]->pid);
    }
    return ps;
  };
  std::map<uint64_t, uint64_t> kernel_leaf, kernel_caller;  // ip -> location id
  const bool kernel_names = symbolizer == nullptr || symbolizer->kallsyms() != nullptr;
  uint64_t kernel_hidden_loc = 0;

  std::vector<uint64_t> locs;
  UnwindResult unwound;
  UnwindOptions unwind_opts;
  for (size_t si = 0; si < samples.size(); ++si) {
    const CpuSample& s = *samples[si];
    PidState& ps = state_of(si);
    ++rep.samples;
    locs.clear();
    // Kernel part (leaf first). Without kernel symbols (their addresses are hidden from the agent
    // without CAP_SYSLOG) a sample's kernel frames are one "[kernel]" frame: addresses alone would
    // tell the reader nothing but the kernel's randomized base.
    if (!s.kernel_ips.empty() && !kernel_names) {
      rep.kernel_frames += s.kernel_ips.size();
      rep.kernel_frames_hidden += s.kernel_ips.size();
      if (kernel_hidden_loc == 0) kernel_hidden_loc = b.AddLocation(0, 0, {{"[kernel]"}});
      locs.push_back(kernel_hidden_loc);
    }
    for (size_t i = 0; kernel_names && i < s.kernel_ips.size(); ++i) {
      ++rep.kernel_frames;
      const uint64_t ip = s.kernel_ips[i];
      auto& cache = i == 0 ? kernel_leaf : kernel_caller;
      auto it = cache.find(ip);
      if (it == cache.end()) {
        ResolvedFrame f;
        if (ps.session) f = ps.session->ResolveKernel(ip, i != 0);
        if (f.lines.empty()) {
          ++rep.kernel_frames_unsymbolized;
          f.lines.push_back(SourceLine{"[kernel]", "[kernel]", "", 0, 0});
        }
        // Kernel frames keep their names but not their addresses: a kernel text address tells
        // every profile reader the kernel's randomization offset (KASLR), and pprof needs none
        // for a location that has its function.
        it = cache.emplace(ip, b.AddLocation(0, 0, ToLineInfos(f.lines))).first;
      }
      locs.push_back(it->second);
    }
    // User part (leaf first): unwound from the stack copy when there is one, else the kernel's
    // frame-pointer walk.
    std::string root_fn;
    const std::vector<uint64_t>* user_ips = &s.user_ips;
    bool used_unwinder = false;
    UnwindStop stop = UnwindStop::kEndOfStack;
    if (s.user_unwound) {
      used_unwinder = true;
      ++rep.samples_unwound;
      if (s.unwind_stitched) ++rep.samples_stitched;
      stop = static_cast<UnwindStop>(s.unwind_stop);
    } else if (ps.session && !s.user_stack.empty() && s.regs.sp != 0 && s.regs.ip != 0) {
      SessionCodeLookup lookup(ps.session.get());
      unwind_opts.fp_ips_scanned = s.fp_walk_scanned;
      Unwind(s.regs, s.user_stack, s.user_ips, &lookup, unwind_opts, &unwound);
      user_ips = &unwound.ips;
      used_unwinder = true;
      ++rep.samples_unwound;
      if (unwound.stitched_frames > 0) ++rep.samples_stitched;
      stop = unwound.stop;
    }
    // A chain found by scanning the stack copy may skip frames: without the unwinder to
    // vouch for it, only the sampled pc is kept.
    std::vector<uint64_t> leaf_only;
    if (!used_unwinder && s.fp_walk_scanned && user_ips->size() > 1) {
      leaf_only.push_back(user_ips->front());
      user_ips = &leaf_only;
    }
    if (user_ips->empty()) ++rep.samples_without_user_stack;
    const std::string* callee_fn = nullptr;  // physical function of the previous frame
    for (size_t i = 0; i < user_ips->size(); ++i) {
      ++rep.user_frames;
      const uint64_t ip = (*user_ips)[i];
      auto& cache = i == 0 ? ps.user_leaf : ps.user_caller;
      auto it = cache.find(ip);
      if (it == cache.end()) {
        ResolvedFrame f;
        if (ps.session) f = ps.session->ResolveUser(ip, i != 0);
        uint64_t mapping_id = 0;
        if (f.mapping >= 0 && ps.session) {
          while (ps.mapping_ids.size() <= static_cast<size_t>(f.mapping)) {
            const MappingView& v = ps.session->mappings()[ps.mapping_ids.size()];
            pprof_encoder::MappingInfo mi;
            mi.memory_start = v.start;
            mi.memory_limit = v.limit;
            mi.file_offset = v.offset;
            mi.filename = v.path;
            mi.build_id = v.build_id;
            mi.has_functions = v.has_functions;
            mi.has_filenames = v.has_filenames;
            mi.has_line_numbers = v.has_line_numbers;
            mi.has_inline_frames = v.has_inline_frames;
            ps.mapping_ids.push_back(b.AddMapping(mi));
          }
          mapping_id = ps.mapping_ids[f.mapping];
        }
        PidState::UserFrame uf;
        uf.fn = f.lines.empty() ? "" : f.lines.back().function;
        if (f.lines.empty()) ++rep.user_frames_unsymbolized;
        // Go wrappers in caller position are left out of stacks as Go's traceback does (a leaf
        // is always kept, so a sample never loses the frame it was taken in).
        uf.wrapper = i != 0 && f.lines.size() == 1 && f.lines[0].go_wrapper;
        if (uf.wrapper) {
          uf.mapping_id = mapping_id;
          uf.lines = std::move(f.lines);
        } else {
          uf.loc = b.AddLocation(mapping_id, ip, ToLineInfos(f.lines));
        }
        it = cache.emplace(ip, std::move(uf)).first;
      } else if (it->second.fn.empty()) {
        ++rep.user_frames_unsymbolized;
      }
      PidState::UserFrame& uf = it->second;
      // Go keeps a wrapper whose callee panicked: the wrapper is where the panic happened.
      const bool keep =
          !uf.wrapper || (callee_fn != nullptr &&
                          (*callee_fn == "runtime.gopanic" || *callee_fn == "runtime.sigpanic" ||
                           *callee_fn == "runtime.panicwrap"));
      if (keep) {
        if (uf.loc == 0) uf.loc = b.AddLocation(uf.mapping_id, ip, ToLineInfos(uf.lines));
        locs.push_back(uf.loc);
      }
      callee_fn = &uf.fn;  // std::map nodes are stable
      if (i + 1 == user_ips->size()) root_fn = uf.fn;
    }
    const bool end_of_stack = used_unwinder && stop == UnwindStop::kEndOfStack;
    if (IsThreadRootFunction(root_fn) || end_of_stack) {
      ++rep.samples_reaching_root;
    } else if (!used_unwinder) {
      ++rep.not_root_frame_pointers;
    } else {
      switch (stop) {
        case UnwindStop::kNoCfi:
          ++rep.unwind_no_cfi;
          break;
        case UnwindStop::kOutsideStack:
          ++rep.unwind_read_outside_stack;
          break;
        case UnwindStop::kDepthLimit:
          ++rep.unwind_depth_limit;
          break;
        case UnwindStop::kBadAddress:
          ++rep.unwind_bad_address;
          break;
        case UnwindStop::kStackSwitch:
          ++rep.unwind_stack_switch;
          break;
        default:
          break;
      }
    }
    const int64_t w = std::max<uint32_t>(s.weight, 1);
    b.AddSample(locs, {w, w * period});
  }

  for (const auto& c : params.comments) b.AddComment(c);
  if (rep.kernel_frames_hidden > 0) {
    b.AddComment(absl::StrCat(
        "pprof-sidecar: ", rep.kernel_frames_hidden, " kernel frames shown as [kernel]: ",
        symbolizer->kallsyms_error(), " (grant the agent CAP_SYSLOG for kernel function names)"));
  }
  const double reach =
      rep.samples ? 100.0 * rep.samples_reaching_root / static_cast<double>(rep.samples) : 100.0;
  b.AddComment(absl::StrFormat(
      "pprof-sidecar: %d samples at %d Hz%s; %.1f%% of stacks reach a thread root frame; "
      "%d of %d user frames and %d of %d kernel frames unsymbolized",
      rep.samples, params.hz, params.clock.empty() ? "" : " taken at " + params.clock, reach,
      rep.user_frames_unsymbolized, rep.user_frames, rep.kernel_frames_unsymbolized,
      rep.kernel_frames));
  b.AddComment(absl::StrFormat(
      "pprof-sidecar: unwinding: %d samples unwound from stack copies (%d completed from frame "
      "pointers), %d from frame pointers only; not reaching a root: no_cfi=%d "
      "read_outside_stack=%d depth_limit=%d bad_address=%d stack_switch=%d frame_pointers=%d",
      rep.samples_unwound, rep.samples_stitched, rep.samples - rep.samples_unwound,
      rep.unwind_no_cfi, rep.unwind_read_outside_stack, rep.unwind_depth_limit,
      rep.unwind_bad_address, rep.unwind_stack_switch, rep.not_root_frame_pointers));
  std::set<std::string> maps_errors;
  for (const auto& [key, ps] : pids) {
    if (ps.session && !ps.session->maps_error().empty()) {
      maps_errors.insert(
          absl::StrCat("pprof-sidecar: pid ", key.first, ": ", ps.session->maps_error()));
    }
  }
  for (const std::string& e : maps_errors) b.AddComment(e);
  return b.Finish();
}

}  // namespace pprof_sidecar
