#include "agent/profile/go_stack_locations.h"

namespace pprof_sidecar {

GoStackLocations::GoStackLocations(const GoImage& img, LocationTable* table,
                                   LocationTable::Image* image)
    : img_(img), table_(table), image_(image) {}

GoStackLocations::~GoStackLocations() {
  if (img_.bin != nullptr && !frames_.empty()) img_.bin->ReleasePages();
}

std::vector<uint64_t> GoStackLocations::Of(const std::vector<uint64_t>& pcs,
                                           std::vector<uint64_t>* location_pcs) {
  std::vector<uint64_t> locs;
  if (location_pcs != nullptr) location_pcs->clear();
  for (size_t i = 0; i < pcs.size();) {
    const uint64_t pc = pcs[i++];
    if (pc == 0) continue;  // the unused tail of a fixed-size record
    auto it = frames_.find(pc);
    if (it == frames_.end()) {
      Frame f;
      f.location = table_->UserLocation(image_, pc, /*is_return_address=*/true, pc - 1);
      absl::StatusOr<SourceLines> sl =
          img_.bin->pcln().SymbolizeLevels(pc - 1 - img_.bias, &levels_);
      if (sl.ok()) {
        for (size_t k = 1; k < sl->size() && k < levels_.size(); ++k) {
          f.inlined_callers.push_back(levels_[k] + 1 + img_.bias);
        }
      }
      it = frames_.emplace(pc, std::move(f)).first;
    }
    locs.push_back(it->second.location);
    if (location_pcs != nullptr) location_pcs->push_back(pc);
    for (uint64_t caller : it->second.inlined_callers) {
      if (i >= pcs.size() || pcs[i] != caller) break;
      ++i;  // part of the location above
    }
  }
  return locs;
}

}  // namespace pprof_sidecar
