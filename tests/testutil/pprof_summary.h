// Parsed output of the pprofcheck tool (tests/tools/pprofcheck): a profile as google/pprof's
// profile package reads and validates it, reduced to what tests assert on.
#ifndef PPROF_SIDECAR_TESTS_TESTUTIL_PPROF_SUMMARY_H_
#define PPROF_SIDECAR_TESTS_TESTUTIL_PPROF_SUMMARY_H_

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar::testing {

struct PprofValueType {
  std::string type, unit;
};

// Per function name (or per function+file+line): values indexed like PprofSummary::sample_types.
// flat: samples whose leaf frame (Location[0].Line[0]) is this function/line.
// cum: samples with this function/line anywhere in the stack (inlined frames included), each
// sample counted once.
struct FuncStats {
  std::string filename;
  std::vector<int64_t> flat, cum;
};
struct LineStats {
  std::string function, filename;
  int64_t line = 0;
  std::vector<int64_t> flat, cum;
};

struct MappingSummary {
  uint64_t id = 0, start = 0, limit = 0, offset = 0;
  std::string file, build_id;
  bool has_functions = false, has_line_numbers = false;
};

// One sample: its values and its function names leaf first, inlined Lines expanded.
struct SampleStack {
  std::vector<int64_t> values;
  std::vector<std::string> frames;
};

struct PprofSummary {
  std::vector<PprofValueType> sample_types;
  std::string default_sample_type;
  PprofValueType period_type;
  int64_t period = 0, time_nanos = 0, duration_nanos = 0;
  std::string drop_frames, keep_frames;
  std::vector<std::string> comments;
  int64_t num_samples = 0, num_locations = 0, num_functions = 0;
  std::vector<int64_t> totals;  // sum of sample values, per sample type
  std::vector<MappingSummary> mappings;
  std::map<std::string, FuncStats> funcs;  // by function name
  std::vector<LineStats> lines;            // sorted by (function, filename, line)
  std::map<std::string, int64_t> roots;    // outermost function -> sum of values[0]
  // String labels (key, value) -> sum of values[0]; numeric labels (key, value, unit) likewise.
  std::map<std::pair<std::string, std::string>, int64_t> labels;
  std::map<std::tuple<std::string, int64_t, std::string>, int64_t> num_labels;
  std::vector<SampleStack> samples;
  double lines_fraction = 0;  // share of locations with at least one Line with line > 0
  int64_t inline_locations = 0, unsymbolized_locations = 0;
  std::string raw;  // the tool's full output
};

// Runs pprofcheck (PprofCheckTool()) on the profile file at `path` (gzipped or not). Fails if
// the tool cannot be built, or google/pprof fails to parse the profile or its CheckValid fails
// (the message carries the tool's error).
absl::StatusOr<PprofSummary> SummarizeProfile(const std::string& path);
// Parses pprofcheck output text (exposed for tests of the parser itself).
absl::StatusOr<PprofSummary> ParsePprofSummary(absl::string_view text);

// Share of total values[index] in samples whose leaf frame's function name contains
// `func_substring` (0 if the total is 0).
double FlatShare(const PprofSummary& s, absl::string_view func_substring, int index = 0);
// Share of total values[index] in samples with any frame (inlined included) whose function name
// contains `func_substring`; each sample counts at most once.
double CumShare(const PprofSummary& s, absl::string_view func_substring, int index = 0);
// Function names of the summary containing `func_substring`.
std::vector<std::string> FindFuncs(const PprofSummary& s, absl::string_view func_substring);

}  // namespace pprof_sidecar::testing

#endif  // PPROF_SIDECAR_TESTS_TESTUTIL_PPROF_SUMMARY_H_
