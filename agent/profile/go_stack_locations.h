// Locations of stacks the Go runtime recorded (heap profile buckets, goroutine tracebacks, block
// and mutex profile buckets) in the one location table, folded as runtime/pprof's profile
// builder folds them: Go records one PC per logical frame, an inlined caller as its inline
// mark's PC + 1 (tracebackPCs); runtime/pprof makes one location per physical frame, at pc - 1,
// named with its inlined callers, and the PCs recorded for those callers belong to it.
#ifndef PPROF_SIDECAR_AGENT_PROFILE_GO_STACK_LOCATIONS_H_
#define PPROF_SIDECAR_AGENT_PROFILE_GO_STACK_LOCATIONS_H_

#include <cstdint>
#include <map>
#include <vector>

#include "agent/goruntime/go_runtime.h"
#include "agent/profile/location_table.h"

namespace pprof_sidecar {

// Folds Go-recorded stacks of one process image into locations of `table`. The exact PCs of a
// frame's inlined callers come from the binary's inline tree (GoPclntab::SymbolizeLevels), not
// from names: a recursive or repeated inlined call is folded only where Go recorded it.
class GoStackLocations {
 public:
  // `img` is the Go binary of `image`; all three outlive this object.
  GoStackLocations(const GoImage& img, LocationTable* table, LocationTable::Image* image);
  // Drops the file pages of the binary read by the folding from the agent's RSS.
  ~GoStackLocations();
  GoStackLocations(const GoStackLocations&) = delete;
  GoStackLocations& operator=(const GoStackLocations&) = delete;

  // The locations of `pcs` (runtime PCs as tracebackPCs records them, leaf first; zeros, the
  // unused tail of a fixed-size record, skipped). `location_pcs` (if not null) gets the recorded
  // PC each location was made for.
  std::vector<uint64_t> Of(const std::vector<uint64_t>& pcs,
                           std::vector<uint64_t>* location_pcs = nullptr);
  const GoImage& image() const { return img_; }

 private:
  struct Frame {
    uint64_t location = 0;
    std::vector<uint64_t> inlined_callers;  // the runtime PCs Go records for them, innermost first
  };
  const GoImage& img_;
  LocationTable* const table_;
  LocationTable::Image* const image_;
  std::map<uint64_t, Frame> frames_;  // by recorded pc
  std::vector<uint64_t> levels_;      // scratch
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_PROFILE_GO_STACK_LOCATIONS_H_
