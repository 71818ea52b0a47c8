// The output formats runtime/pprof and the runtime's traceback give Go stacks, for profiles read
// from outside the process (goroutine, threadcreate):
//   - count profiles (runtime/pprof's printCountProfile): debug=0 proto with one sample per
//     distinct stack (and label set) and its count; debug=1 legacy text ("<name> profile: total
//     N", "count @ pcs", "#\tpc\tfunc+off\tfile:line" through text/tabwriter's alignment);
//   - debug=2: the crash-style dump (runtime.Stack(all)): "goroutine N [status, M minutes]:",
//     frames "func(args)\n\tfile:line +0xoff", "created by F in goroutine K".
// Stacks are given as Go's traceback records them (tracebackPCs): runtime return addresses,
// one per inlined level (parentPc + 1 for callers inlined into a frame), wrappers left out.
#ifndef PPROF_SIDECAR_AGENT_GOPROFILE_GO_STACK_FORMAT_H_
#define PPROF_SIDECAR_AGENT_GOPROFILE_GO_STACK_FORMAT_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/goprofile/goroutines.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/profile/go_stack_locations.h"
#include "agent/profile/location_table.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

// Go's tracebackPCs of the frames (GoFrame list of ReadGoroutines): runtime PCs.
std::vector<uint64_t> GoTracebackPcs(const GoImage& img, const std::vector<GoFrame>& frames);

// runtime/pprof's expandInlinedFrames: runtime.CallersFrames over `pcs` (return PCs, some of
// them possibly already followed by their inlined callers' PCs), each frame as its PC + 1: adds
// the PCs of inlined callers that are missing. PCs outside Go functions are dropped.
std::vector<uint64_t> GoExpandInlined(const GoImage& img, const std::vector<uint64_t>& pcs);

struct CountStack {
  std::vector<uint64_t> pcs;                                // runtime PCs as tracebackPCs gives
  std::vector<std::pair<std::string, std::string>> labels;  // sorted by key
};

// runtime/pprof's labelMap.String(): {"k":"v", ...} with keys sorted.
std::string GoLabelsText(const std::vector<std::pair<std::string, std::string>>& labels);

// debug=1 text of a count profile named `name` ("goroutine", "threadcreate").
std::string CountProfileText(const GoImage& img, const std::string& name,
                             const std::vector<CountStack>& stacks);

// debug=0: gzipped pprof with sample type <name>/count, period type <name>/count, period 1;
// locations and mappings of process `pid` through `symbolizer` (the one location table).
absl::StatusOr<std::string> CountProfileProto(const GoImage& img, pid_t pid,
                                              ProcessSymbolizer* symbolizer,
                                              const std::string& name,
                                              const std::vector<CountStack>& stacks,
                                              absl::Time time,
                                              const std::vector<std::string>& comments);

// debug=2: every goroutine of `snap` that Go's runtime.Stack(all) prints (not system ones), in
// the runtime's order, each with its header, frames and creator.
std::string GoroutineDump(const GoImage& img, const GoroutineSnapshot& snap,
                          MemoryReader* mem_for_args);

// runtime/pprof's printStackRecord lines for `pcs` ("#\tpc\tfunc+off\tfile:line", then an empty
// line); all_frames=false hides leading runtime frames.
void AppendStackRecordLines(const GoImage& img, const std::vector<uint64_t>& pcs, bool all_frames,
                            std::vector<std::string>* lines);
// `lines` through text/tabwriter.NewWriter(w, 1, 8, 1, '\t', 0), each ending in '\n'.
std::string TabFormat(const std::vector<std::string>& lines);

// runtime's isExportedRuntime and showfuncinfo at GOTRACEBACK=single (level 1).
bool GoShowFrame(const std::string& name, bool first_frame);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GOPROFILE_GO_STACK_FORMAT_H_
