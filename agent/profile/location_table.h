// The one location table every profile builder (CPU, heap/allocs, goroutine, block, mutex) uses:
// per process image, symbolized frames with their inlined calls expanded, deduplicated pprof
// locations and mappings in one pprof_encoder::Builder. Builders decide which frames a stack
// keeps (Go's wrappers, runtime frames) and which address a location carries; the table names
// frames the same way for all of them. Pure: no sampler, no BPF.
#ifndef PPROF_SIDECAR_AGENT_PROFILE_LOCATION_TABLE_H_
#define PPROF_SIDECAR_AGENT_PROFILE_LOCATION_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agent/symbolize/process_symbolizer.h"
#include "pprof_encoder/builder.h"

namespace pprof_sidecar {

// One LineInfo per SourceLine, in the same order (innermost inlined function first); a missing
// system name falls back to the display name, as runtime/pprof writes them.
std::vector<pprof_encoder::LineInfo> ToLineInfos(const SourceLines& lines);

class LocationTable {
 public:
  // A symbolized user frame of one image.
  struct UserFrame {
    ResolvedFrame resolved;   // lines innermost first; mapping index into the image's session
    std::string innermost;    // function of the innermost line ("" if unsymbolized)
    std::string physical;     // function of the outermost line: the machine code's function
    bool go_wrapper = false;  // one line, a Go compiler-generated wrapper
    bool symbolized() const { return !resolved.lines.empty(); }
  };
  // A process image: a pid with the mappings its samples were taken under (or those read now).
  class Image;

  // `builder` receives the locations and mappings; `symbolizer` may be null (nothing resolves).
  // Both outlive the table.
  LocationTable(pprof_encoder::Builder* builder, ProcessSymbolizer* symbolizer);
  ~LocationTable();

  // The image of `pid` under `snapshot` (null: the mappings read now); one per distinct pair.
  Image* ImageOf(uint32_t pid,
                 const std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>& snapshot = nullptr);
  // The frame at `pc` of `image` (a return address is symbolized at pc-1). Cached per image; the
  // reference stays valid for the table's life.
  const UserFrame& User(Image* image, uint64_t pc, bool is_return_address);
  // The location of that frame, created once per (image, pc, is_return_address) with `address`
  // (builders pass the pc, or pc-1 for return addresses as Go's heap profiles do) and its mapping.
  // Its lines are the frame's, but for a Go wrapper with calls inlined into it (a `go` statement's
  // gowrap, a method value's -fm): the wrapper's own line is left out, as Go's traceback elides
  // such a wrapper's level in every profile it records (CPU, heap, goroutine, block, mutex).
  uint64_t UserLocation(Image* image, uint64_t pc, bool is_return_address, uint64_t address);
  // A kernel frame's location: named, address 0 (a kernel address reveals its KASLR offset);
  // "[kernel]" when it cannot be named. `unsymbolized` is set when it could not be.
  uint64_t KernelLocation(Image* image, uint64_t ip, bool is_return_address, bool* unsymbolized);
  // A location with only a function name (e.g. "[kernel]" for hidden kernel frames).
  uint64_t NamedLocation(const std::string& function);

  // "pprof-sidecar: pid N: <why its maps could not be read>" for each image with such an error.
  std::vector<std::string> MapsErrors() const;

 private:
  uint64_t MappingId(Image* image, int mapping);

  pprof_encoder::Builder* const builder_;
  ProcessSymbolizer* const symbolizer_;
  std::map<std::pair<uint32_t, const void*>, std::unique_ptr<Image>> images_;
  std::map<std::string, uint64_t> named_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_PROFILE_LOCATION_TABLE_H_
