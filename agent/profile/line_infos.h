// Conversion of symbolized source lines to the pprof encoder's Line records, shared by every
// profile builder (CPU, heap) so that all profiles name functions the same way.
#ifndef PPROF_SIDECAR_AGENT_PROFILE_LINE_INFOS_H_
#define PPROF_SIDECAR_AGENT_PROFILE_LINE_INFOS_H_

#include <utility>
#include <vector>

#include "agent/symbolize/source_line.h"
#include "pprof_encoder/builder.h"

namespace pprof_sidecar {

// One LineInfo per SourceLine, in the same order (innermost inlined function first); a missing
// system name falls back to the display name, as runtime/pprof writes them.
inline std::vector<pprof_encoder::LineInfo> ToLineInfos(const SourceLines& lines) {
  std::vector<pprof_encoder::LineInfo> out;
  out.reserve(lines.size());
  for (const auto& l : lines) {
    pprof_encoder::LineInfo li;
    li.function = l.function;
    li.system_name = l.system_name.empty() ? l.function : l.system_name;
    li.filename = l.file;
    li.line = l.line;
    li.start_line = l.start_line;
    out.push_back(std::move(li));
  }
  return out;
}

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_PROFILE_LINE_INFOS_H_
