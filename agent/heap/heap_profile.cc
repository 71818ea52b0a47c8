#include "agent/heap/heap_profile.h"

#include <cmath>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/profile/line_infos.h"
#include "pprof_encoder/builder.h"

namespace pprof_sidecar {

std::pair<int64_t, int64_t> ScaleHeapSample(int64_t count, int64_t size, int64_t rate) {
  if (count == 0 || size == 0) return {0, 0};
  if (rate <= 1) return {count, size};
  const double avg = static_cast<double>(size) / static_cast<double>(count);
  const double scale = 1 / (1 - std::exp(-avg / static_cast<double>(rate)));
  return {static_cast<int64_t>(static_cast<double>(count) * scale),
          static_cast<int64_t>(static_cast<double>(size) * scale)};
}

bool IsHiddenGoRuntimeFrame(const std::string& function) {
  return absl::StartsWith(function, "runtime.");
}

namespace {

struct Frame {
  ResolvedFrame resolved;
  std::string innermost;  // "" if unsymbolized
};

}  // namespace

absl::StatusOr<std::string> BuildGoHeapProfile(const GoHeapSnapshot& snap, pid_t pid,
                                               const HeapProfileParams& params,
                                               ProcessSymbolizer* symbolizer,
                                               HeapProfileReport* report) {
  HeapProfileReport local;
  HeapProfileReport& rep = report ? *report : local;
  rep = HeapProfileReport();
  const int64_t rate = snap.mem_profile_rate;

  pprof_encoder::Builder b;
  b.SetPeriodType("space", "bytes");
  b.SetPeriod(rate);
  b.AddSampleType("alloc_objects", "count");
  b.AddSampleType("alloc_space", "bytes");
  b.AddSampleType("inuse_objects", "count");
  b.AddSampleType("inuse_space", "bytes");
  if (params.kind == HeapProfileKind::kAllocs) b.SetDefaultSampleType("alloc_space");
  b.SetTimeNanos(absl::ToUnixNanos(params.time));
  b.SetDurationNanos(absl::ToInt64Nanoseconds(params.duration));

  std::unique_ptr<ProcessSymbolizer::Session> session =
      symbolizer ? symbolizer->NewSession(pid) : nullptr;
  std::map<uint64_t, Frame> frames;        // return pc -> symbolized call site
  std::map<uint64_t, uint64_t> loc_of_pc;  // return pc -> location id (whole inline chain)
  std::vector<uint64_t> mapping_ids;       // session mapping index -> builder mapping id
  auto resolve = [&](uint64_t pc) -> const Frame& {
    auto it = frames.find(pc);
    if (it != frames.end()) return it->second;
    Frame f;
    if (session) f.resolved = session->ResolveUser(pc, /*is_return_address=*/true);
    if (!f.resolved.lines.empty()) f.innermost = f.resolved.lines.front().function;
    return frames.emplace(pc, std::move(f)).first->second;
  };
  auto mapping_id = [&](int mapping) -> uint64_t {
    if (mapping < 0 || !session) return 0;
    while (mapping_ids.size() <= static_cast<size_t>(mapping)) {
      const MappingView& v = session->mappings()[mapping_ids.size()];
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
      mapping_ids.push_back(b.AddMapping(mi));
    }
    return mapping_ids[mapping];
  };

  std::vector<uint64_t> locs;
  for (const GoHeapRecord& r : snap.records) {
    ++rep.records;
    const std::vector<uint64_t>& stk = r.stack;
    // Hide leading runtime frames (mallocgc's callers such as runtime.makeslice), keeping the
    // whole stack if every frame is in the runtime.
    size_t start = 0;
    for (size_t i = 0; !params.native && i < stk.size(); ++i) {
      if (!IsHiddenGoRuntimeFrame(resolve(stk[i]).innermost)) {
        start = i;
        break;
      }
    }
    locs.clear();
    for (size_t i = start; i < stk.size();) {
      const uint64_t pc = stk[i];
      const Frame& f = resolve(pc);
      ++rep.frames;
      if (!params.native && f.innermost == "runtime.goexit") {
        ++i;
        continue;
      }
      if (f.resolved.lines.empty()) ++rep.frames_unsymbolized;
      // Go records one PC per logical frame: the next PCs of an inlined call chain symbolize to
      // the outer functions of this PC's chain. They belong to this same location.
      size_t span = 1;
      const SourceLines& lines = f.resolved.lines;
      while (!params.native && span < lines.size() && i + span < stk.size() &&
             resolve(stk[i + span]).innermost == lines[span].function) {
        ++span;
      }
      auto it = loc_of_pc.find(pc);
      if (it == loc_of_pc.end()) {
        it = loc_of_pc
                 .emplace(pc,
                          b.AddLocation(mapping_id(f.resolved.mapping), pc - 1, ToLineInfos(lines)))
                 .first;
      }
      locs.push_back(it->second);
      i += span;
    }
    const auto alloc = ScaleHeapSample(r.allocs, r.alloc_bytes, rate);
    const auto inuse = ScaleHeapSample(r.allocs - r.frees, r.alloc_bytes - r.free_bytes, rate);
    std::vector<pprof_encoder::Label> labels;
    if (r.allocs > 0 && r.alloc_bytes / r.allocs != 0) {
      pprof_encoder::Label l;
      l.key = "bytes";
      l.num = r.alloc_bytes / r.allocs;
      labels.push_back(std::move(l));
    }
    b.AddSample(locs, {alloc.first, alloc.second, inuse.first, inuse.second}, labels);
  }

  for (const auto& c : params.comments) b.AddComment(c);
  if (params.native) {
    b.AddComment(absl::StrFormat(
        "pprof-sidecar: %d malloc profile buckets of pid %d, sampled every %d bytes on average; "
        "%d of %d frames unsymbolized",
        rep.records, pid, rate, rep.frames_unsymbolized, rep.frames));
  } else {
    b.AddComment(absl::StrFormat(
        "pprof-sidecar: %d heap profile buckets of pid %d, MemProfileRate %d, heap profile cycle "
        "%d%s; %d of %d frames unsymbolized",
        rep.records, pid, rate, snap.cycle,
        snap.no_gc_yet ? " (no GC completed yet: all sampled allocations shown)" : "",
        rep.frames_unsymbolized, rep.frames));
  }
  if (session && !session->maps_error().empty()) {
    b.AddComment(absl::StrCat("pprof-sidecar: pid ", pid, ": ", session->maps_error()));
  }
  return b.Finish();
}

}  // namespace pprof_sidecar
