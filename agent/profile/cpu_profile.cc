#include "agent/profile/cpu_profile.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/profile/location_table.h"
#include "agent/unwind/unwinder.h"
#include "pprof_encoder/builder.h"

namespace pprof_sidecar {

CpuProfileReport& CpuProfileReport::operator+=(const CpuProfileReport& o) {
  samples += o.samples;
  samples_reaching_root += o.samples_reaching_root;
  samples_without_user_stack += o.samples_without_user_stack;
  user_frames += o.user_frames;
  user_frames_unsymbolized += o.user_frames_unsymbolized;
  kernel_frames += o.kernel_frames;
  kernel_frames_unsymbolized += o.kernel_frames_unsymbolized;
  kernel_frames_hidden += o.kernel_frames_hidden;
  samples_unwound += o.samples_unwound;
  samples_stitched += o.samples_stitched;
  unwind_no_cfi += o.unwind_no_cfi;
  unwind_read_outside_stack += o.unwind_read_outside_stack;
  unwind_depth_limit += o.unwind_depth_limit;
  unwind_bad_address += o.unwind_bad_address;
  unwind_stack_switch += o.unwind_stack_switch;
  not_root_frame_pointers += o.not_root_frame_pointers;
  return *this;
}

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

absl::StatusOr<std::string> BuildCpuProfile(const std::vector<StackSample>& samples,
                                            const CpuProfileParams& params,
                                            ProcessSymbolizer* symbolizer,
                                            CpuProfileReport* report) {
  // Unwinding happens in the unwinder: copies of the samples are reduced as the agent's reader
  // thread reduces them, then built like any window's samples.
  std::vector<StackSample> reduced = samples;
  std::vector<const StackSample*> ptrs;
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
void AddKernelFrames(const StackSample& s, bool kernel_names, LocationTable* table,
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
void CountStackEnd(const StackSample& s, const std::string& root_fn, CpuProfileReport* rep) {
  const UnwindStop stop = static_cast<UnwindStop>(s.unwound.stop);
  if (s.unwound.done) {
    ++rep->samples_unwound;
    if (s.unwound.stitched) ++rep->samples_stitched;
  }
  if (IsThreadRootFunction(root_fn) || (s.unwound.done && stop == UnwindStop::kEndOfStack)) {
    ++rep->samples_reaching_root;
    return;
  }
  if (!s.unwound.done) {
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
    const std::vector<const StackSample*>& samples, const CpuProfileParams& params,
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
  std::vector<pprof_encoder::Label> labels;  // the goroutine's pprof labels, as runtime/pprof
  for (size_t si = 0; si < samples.size(); ++si) {
    const StackSample& s = *samples[si];
    LocationTable::Image* image =
        table.ImageOf(s.pid, maps != nullptr && si < maps->size() ? (*maps)[si] : kNow);
    ++rep.samples;
    locs.clear();
    AddKernelFrames(s, kernel_names, &table, image, &locs, &rep);
    // A chain found by scanning the stack copy may skip frames: without the unwinder to vouch
    // for it, only the sampled pc is kept.
    std::vector<uint64_t> leaf_only;
    const std::vector<uint64_t>* ips = &s.user_ips;
    if (!s.unwound.done && s.fp_walk_scanned && ips->size() > 1) {
      leaf_only.push_back(ips->front());
      ips = &leaf_only;
    }
    if (ips->empty()) ++rep.samples_without_user_stack;
    CountStackEnd(s, AddUserFrames(*ips, &table, image, &locs, &rep), &rep);
    const int64_t w = std::max<uint32_t>(s.weight, 1);
    labels.clear();
    if (s.labels) {
      for (const auto& [k, v] : *s.labels) labels.push_back({k, v, 0, ""});
    }
    b.AddSample(locs, {w, w * period}, labels);
  }
  AddCpuComments(params, rep, symbolizer, table, &b);
  return b.Finish();
}

}  // namespace pprof_sidecar
