#include "agent/heap/heap_profile.h"

#include <cmath>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/profile/go_stack_locations.h"
#include "agent/profile/location_table.h"
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

bool IsHiddenGoRuntimeFrame(const std::string& function, int go_minor) {
  return absl::StartsWith(function, "runtime.") ||
         ((go_minor == 0 || go_minor >= 24) && absl::StartsWith(function, "internal/runtime/"));
}

namespace {

// The locations of one Go stack (leaf first): leading runtime frames hidden (the whole stack
// kept if every frame is in the runtime), runtime.goexit dropped, the PCs Go records for inlined
// callers folded into their inlinee's location (`go`).
void AddGoStack(const std::vector<uint64_t>& stk, GoStackLocations* go, LocationTable* table,
                LocationTable::Image* image, std::vector<uint64_t>* locs, HeapProfileReport* rep) {
  auto frame = [&](uint64_t pc) -> const LocationTable::UserFrame& {
    return table->User(image, pc, /*is_return_address=*/true);
  };
  size_t start = 0;
  for (size_t i = 0; i < stk.size(); ++i) {
    if (!IsHiddenGoRuntimeFrame(frame(stk[i]).innermost, go->image().bin->minor())) {
      start = i;
      break;
    }
  }
  std::vector<uint64_t> pcs, located;
  for (size_t i = start; i < stk.size(); ++i) {
    if (frame(stk[i]).innermost == "runtime.goexit") {
      ++rep->frames;
      continue;
    }
    pcs.push_back(stk[i]);
  }
  *locs = go->Of(pcs, &located);
  for (uint64_t pc : located) {
    ++rep->frames;
    if (!frame(pc).symbolized()) ++rep->frames_unsymbolized;
  }
}

// A native stack: one location per PC (return addresses), at pc-1.
void AddNativeStack(const std::vector<uint64_t>& stk, LocationTable* table,
                    LocationTable::Image* image, std::vector<uint64_t>* locs,
                    HeapProfileReport* rep) {
  for (uint64_t pc : stk) {
    ++rep->frames;
    if (!table->User(image, pc, true).symbolized()) ++rep->frames_unsymbolized;
    locs->push_back(table->UserLocation(image, pc, true, pc - 1));
  }
}

void AddHeapSample(const HeapRecord& r, int64_t rate, const std::vector<uint64_t>& locs,
                   pprof_encoder::Builder* b) {
  const auto alloc = ScaleHeapSample(r.allocs, r.alloc_bytes, rate);
  const auto inuse = ScaleHeapSample(r.allocs - r.frees, r.alloc_bytes - r.free_bytes, rate);
  std::vector<pprof_encoder::Label> labels;
  if (r.allocs > 0 && r.alloc_bytes / r.allocs != 0) {
    pprof_encoder::Label l;
    l.key = "bytes";
    l.num = r.alloc_bytes / r.allocs;
    labels.push_back(std::move(l));
  }
  b->AddSample(locs, {alloc.first, alloc.second, inuse.first, inuse.second}, labels);
}

void AddHeapComments(const HeapSnapshot& snap, pid_t pid, const HeapProfileParams& params,
                     const HeapProfileReport& rep, const LocationTable& table,
                     pprof_encoder::Builder* b) {
  for (const auto& c : params.comments) b->AddComment(c);
  if (params.native) {
    b->AddComment(absl::StrFormat(
        "pprof-sidecar: %d malloc profile buckets of pid %d, sampled every %d bytes on average; "
        "%d of %d frames unsymbolized",
        rep.records, pid, snap.mem_profile_rate, rep.frames_unsymbolized, rep.frames));
  } else {
    b->AddComment(absl::StrFormat(
        "pprof-sidecar: %d heap profile buckets of pid %d, MemProfileRate %d, heap profile cycle "
        "%d%s; %d of %d frames unsymbolized",
        rep.records, pid, snap.mem_profile_rate, snap.cycle,
        snap.no_gc_yet ? " (no GC completed yet: all sampled allocations shown)" : "",
        rep.frames_unsymbolized, rep.frames));
  }
  for (const std::string& e : table.MapsErrors()) b->AddComment(e);
}

}  // namespace

absl::StatusOr<std::string> BuildHeapProfile(const HeapSnapshot& snap, pid_t pid,
                                             const HeapProfileParams& params,
                                             ProcessSymbolizer* symbolizer,
                                             HeapProfileReport* report) {
  if (!params.native && (params.go_image == nullptr || params.go_image->bin == nullptr)) {
    return absl::InvalidArgumentError("a Go heap profile needs the target's Go binary");
  }
  HeapProfileReport local;
  HeapProfileReport& rep = report ? *report : local;
  rep = HeapProfileReport();
  pprof_encoder::Builder b;
  b.SetPeriodType("space", "bytes");
  b.SetPeriod(snap.mem_profile_rate);
  b.AddSampleType("alloc_objects", "count");
  b.AddSampleType("alloc_space", "bytes");
  b.AddSampleType("inuse_objects", "count");
  b.AddSampleType("inuse_space", "bytes");
  if (params.kind == HeapProfileKind::kAllocs) b.SetDefaultSampleType("alloc_space");
  b.SetTimeNanos(absl::ToUnixNanos(params.time));
  b.SetDurationNanos(absl::ToInt64Nanoseconds(params.duration));
  LocationTable table(&b, symbolizer);
  LocationTable::Image* image = table.ImageOf(static_cast<uint32_t>(pid));
  std::optional<GoStackLocations> go;
  if (!params.native) go.emplace(*params.go_image, &table, image);
  std::vector<uint64_t> locs;
  for (const HeapRecord& r : snap.records) {
    ++rep.records;
    locs.clear();
    if (go) {
      AddGoStack(r.stack, &*go, &table, image, &locs, &rep);
    } else {
      AddNativeStack(r.stack, &table, image, &locs, &rep);
    }
    AddHeapSample(r, snap.mem_profile_rate, locs, &b);
  }
  AddHeapComments(snap, pid, params, rep, table, &b);
  return b.Finish();
}

}  // namespace pprof_sidecar
