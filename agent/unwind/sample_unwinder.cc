#include "agent/unwind/sample_unwinder.h"

#include <optional>
#include <utility>

#include "agent/symbolize/kallsyms.h"
#include "agent/symbolize/proc_maps.h"
#include "agent/unwind/unwinder.h"

namespace pprof_sidecar {

namespace {

class SessionCodeLookup : public UnwindCodeLookup {
 public:
  SessionCodeLookup(ProcessSymbolizer::Session* s, UnwindTableCache* tables)
      : s_(s), tables_(tables) {}
  bool Find(uint64_t pc, Code* out) override {
    const ProcessSymbolizer::Session::CodeAt* c = s_->FindCode(pc);
    if (c == nullptr) return false;
    if (c->binary != last_binary_) {  // frames of one binary follow each other
      last_ = tables_->Get(*c);
      last_binary_ = c->binary;
    }
    *out = Code();
    out->cfi = last_->cfi.get();
    out->go = c->go;
    out->bias = c->bias;
    if (last_->cgo.asmcgocall_return != 0) {
      out->elf = c->elf;
      out->cgocall_entry = last_->cgo.cgocall_entry;
      out->asmcgocall_return = last_->cgo.asmcgocall_return;
    }
    return true;
  }

 private:
  ProcessSymbolizer::Session* const s_;
  UnwindTableCache* const tables_;
  std::shared_ptr<const ProcessSymbolizer::Binary> last_binary_;
  std::shared_ptr<const UnwindTables> last_;
};

}  // namespace

struct SampleUnwinder::PidSession {
  std::unique_ptr<ProcessSymbolizer::Session> session;
  absl::Time created;                                               // or last found unchanged
  std::shared_ptr<const ProcessSymbolizer::MapsSnapshot> snapshot;  // of session; lazily
  size_t snapshot_binaries = 0;  // session->binaries_opened() when snapshot was taken
};

SampleUnwinder::SampleUnwinder(ProcessSymbolizer* symbolizer, UnwindTableCache* tables,
                               absl::Duration maps_refresh)
    : symbolizer_(symbolizer),
      maps_refresh_(maps_refresh),
      own_tables_(tables == nullptr ? std::make_unique<UnwindTableCache>() : nullptr),
      tables_(tables == nullptr ? own_tables_.get() : tables) {}

SampleUnwinder::~SampleUnwinder() = default;

void SampleUnwinder::Reduce(StackSample* s,
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
    SessionCodeLookup lookup(p.session.get(), tables_);
    UnwindResult r;
    r.ips.reserve(64);
    UnwindOptions opts;
    opts.fp_ips_scanned = s->fp_walk_scanned;
    opts.fp_ips_bp = s->fp_walk_bp;
    Unwind(s->regs, s->user_stack, s->user_ips, &lookup, opts, &r);
    s->user_ips.assign(r.ips.begin(), r.ips.end());
    s->unwound.done = true;
    s->unwound.stitched = r.stitched_frames > 0;
    s->unwound.stop = static_cast<uint8_t>(r.stop);
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
  SessionCodeLookup lookup(session.get(), tables_);
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

}  // namespace pprof_sidecar
