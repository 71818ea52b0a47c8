#include "tests/testutil/pprof_summary.h"

#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar::testing {
namespace {

absl::Status Bad(absl::string_view line, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("pprofcheck output line \"", line, "\": ", why));
}

bool ParseInt(absl::string_view s, int64_t* out) { return absl::SimpleAtoi(s, out); }
bool ParseUint(absl::string_view s, uint64_t* out) { return absl::SimpleAtoi(s, out); }

bool ParseInts(absl::string_view s, std::vector<int64_t>* out) {
  out->clear();
  if (s.empty()) return true;
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    int64_t v;
    if (!ParseInt(part, &v)) return false;
    out->push_back(v);
  }
  return true;
}

int64_t At(const std::vector<int64_t>& v, int index) {
  return index >= 0 && static_cast<size_t>(index) < v.size() ? v[index] : 0;
}

double Share(const PprofSummary& s, int64_t part, int index) {
  int64_t total = At(s.totals, index);
  return total == 0 ? 0.0 : static_cast<double>(part) / static_cast<double>(total);
}

}  // namespace

absl::StatusOr<PprofSummary> ParsePprofSummary(absl::string_view text) {
  PprofSummary s;
  s.raw = std::string(text);
  bool valid = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
    const absl::string_view tag = f[0];
    auto need = [&](size_t n) { return f.size() >= n; };
    auto int_field = [&](size_t i, int64_t* out) -> bool {
      return i < f.size() && ParseInt(f[i], out);
    };
    if (tag == "valid") {
      if (!need(2)) return Bad(line, "short");
      valid = f[1] == "true";
    } else if (tag == "sample_type") {
      if (!need(3)) return Bad(line, "short");
      s.sample_types.push_back({std::string(f[1]), std::string(f[2])});
    } else if (tag == "default_sample_type") {
      s.default_sample_type = need(2) ? std::string(f[1]) : "";
    } else if (tag == "period_type") {
      if (!need(3)) return Bad(line, "short");
      s.period_type = {std::string(f[1]), std::string(f[2])};
    } else if (tag == "period") {
      if (!int_field(1, &s.period)) return Bad(line, "bad number");
    } else if (tag == "time_nanos") {
      if (!int_field(1, &s.time_nanos)) return Bad(line, "bad number");
    } else if (tag == "duration_nanos") {
      if (!int_field(1, &s.duration_nanos)) return Bad(line, "bad number");
    } else if (tag == "drop_frames") {
      s.drop_frames = need(2) ? std::string(f[1]) : "";
    } else if (tag == "keep_frames") {
      s.keep_frames = need(2) ? std::string(f[1]) : "";
    } else if (tag == "comment") {
      s.comments.push_back(need(2) ? std::string(f[1]) : "");
    } else if (tag == "num_samples") {
      if (!int_field(1, &s.num_samples)) return Bad(line, "bad number");
    } else if (tag == "num_locations") {
      if (!int_field(1, &s.num_locations)) return Bad(line, "bad number");
    } else if (tag == "num_functions") {
      if (!int_field(1, &s.num_functions)) return Bad(line, "bad number");
    } else if (tag == "total") {
      int64_t idx, v;
      if (!int_field(1, &idx) || !int_field(2, &v)) return Bad(line, "bad number");
      if (idx != static_cast<int64_t>(s.totals.size())) return Bad(line, "totals out of order");
      s.totals.push_back(v);
    } else if (tag == "mapping") {
      if (!need(9)) return Bad(line, "short");
      MappingSummary m;
      if (!ParseUint(f[1], &m.id) || !ParseUint(f[2], &m.start) || !ParseUint(f[3], &m.limit) ||
          !ParseUint(f[4], &m.offset)) {
        return Bad(line, "bad number");
      }
      m.file = std::string(f[5]);
      m.build_id = std::string(f[6]);
      m.has_functions = f[7] == "true";
      m.has_line_numbers = f[8] == "true";
      s.mappings.push_back(std::move(m));
    } else if (tag == "func") {
      if (!need(5)) return Bad(line, "short");
      FuncStats st;
      st.filename = std::string(f[2]);
      if (!ParseInts(f[3], &st.flat) || !ParseInts(f[4], &st.cum)) return Bad(line, "bad values");
      s.funcs[std::string(f[1])] = std::move(st);
    } else if (tag == "line") {
      if (!need(6)) return Bad(line, "short");
      LineStats st;
      st.function = std::string(f[1]);
      st.filename = std::string(f[2]);
      if (!ParseInt(f[3], &st.line) || !ParseInts(f[4], &st.flat) || !ParseInts(f[5], &st.cum)) {
        return Bad(line, "bad values");
      }
      s.lines.push_back(std::move(st));
    } else if (tag == "root") {
      int64_t v;
      if (!need(3) || !ParseInt(f[2], &v)) return Bad(line, "bad root");
      s.roots[std::string(f[1])] = v;
    } else if (tag == "label") {
      int64_t v;
      if (!need(4) || !ParseInt(f[3], &v)) return Bad(line, "bad label");
      s.labels[{std::string(f[1]), std::string(f[2])}] = v;
    } else if (tag == "numlabel") {
      int64_t num, v;
      if (!need(5) || !ParseInt(f[2], &num) || !ParseInt(f[4], &v)) return Bad(line, "bad label");
      s.num_labels[std::make_tuple(std::string(f[1]), num, std::string(f[3]))] = v;
    } else if (tag == "sample") {
      if (!need(2)) return Bad(line, "short");
      SampleStack st;
      if (!ParseInts(f[1], &st.values)) return Bad(line, "bad values");
      for (size_t i = 2; i < f.size(); ++i) st.frames.emplace_back(f[i]);
      s.samples.push_back(std::move(st));
    } else if (tag == "lines_fraction") {
      if (!need(2) || !absl::SimpleAtod(f[1], &s.lines_fraction)) return Bad(line, "bad number");
    } else if (tag == "inline_locations") {
      if (!int_field(1, &s.inline_locations)) return Bad(line, "bad number");
    } else if (tag == "unsymbolized_locations") {
      if (!int_field(1, &s.unsymbolized_locations)) return Bad(line, "bad number");
    }
    // Unknown tags are ignored so the tool can grow.
  }
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat("profile not valid per pprofcheck:\n", text));
  }
  return s;
}

absl::StatusOr<PprofSummary> SummarizeProfile(const std::string& path) {
  absl::StatusOr<std::string> tool = PprofCheckTool();
  if (!tool.ok()) return tool.status();
  CommandResult r = RunCommand(absl::StrCat("'", *tool, "' '", path, "'"));
  if (r.exit_code != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pprofcheck ", path, " exited ", r.exit_code, ":\n", r.output));
  }
  return ParsePprofSummary(r.output);
}

double FlatShare(const PprofSummary& s, absl::string_view func_substring, int index) {
  int64_t part = 0;
  for (const SampleStack& st : s.samples) {
    if (!st.frames.empty() && absl::StrContains(st.frames.front(), func_substring)) {
      part += At(st.values, index);
    }
  }
  return Share(s, part, index);
}

double CumShare(const PprofSummary& s, absl::string_view func_substring, int index) {
  int64_t part = 0;
  for (const SampleStack& st : s.samples) {
    for (const std::string& fr : st.frames) {
      if (absl::StrContains(fr, func_substring)) {
        part += At(st.values, index);
        break;
      }
    }
  }
  return Share(s, part, index);
}

std::vector<std::string> FindFuncs(const PprofSummary& s, absl::string_view func_substring) {
  std::vector<std::string> out;
  for (const auto& [name, st] : s.funcs) {
    if (absl::StrContains(name, func_substring)) out.push_back(name);
  }
  return out;
}

}  // namespace pprof_sidecar::testing
