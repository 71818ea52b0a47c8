// Builder for pprof profiles (profile.proto). Dedups strings, functions, locations and mappings,
// merges samples with identical stacks and labels, validates, and serializes gzipped.
#ifndef PPROF_SIDECAR_PPROF_ENCODER_BUILDER_H_
#define PPROF_SIDECAR_PPROF_ENCODER_BUILDER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pprof_encoder/profile.pb.h"

namespace pprof_encoder {

struct MappingInfo {
  uint64_t memory_start = 0, memory_limit = 0, file_offset = 0;
  std::string filename, build_id;
  bool has_functions = false, has_filenames = false, has_line_numbers = false,
       has_inline_frames = false;
};

struct LineInfo {
  std::string function;     // display name
  std::string system_name;  // raw name ("" -> same as function)
  std::string filename;
  int64_t line = 0;
  int64_t start_line = 0;
};

struct Label {
  std::string key;
  std::string str;  // either str or num
  int64_t num = 0;
  std::string num_unit;
};

class Builder {
 public:
  Builder();
  // Copies are independent (deep copy of the profile and dedup tables).
  Builder(const Builder& other);
  Builder& operator=(const Builder& other);
  Builder(Builder&&) = default;
  Builder& operator=(Builder&&) = default;

  // Index in the string table (index 0 is always "").
  int64_t StringId(absl::string_view s);
  void AddSampleType(absl::string_view type, absl::string_view unit);
  void SetPeriodType(absl::string_view type, absl::string_view unit);
  void SetPeriod(int64_t period);
  void SetTimeNanos(int64_t t);
  void SetDurationNanos(int64_t d);
  void SetDefaultSampleType(absl::string_view type);
  void AddComment(absl::string_view comment);
  void SetDropFrames(absl::string_view regex);

  // Returns a mapping id (1-based), deduplicated on all fields.
  uint64_t AddMapping(const MappingInfo& m);
  // Returns a function id, deduplicated on (name, system_name, filename, start_line).
  uint64_t AddFunction(absl::string_view name, absl::string_view system_name,
                       absl::string_view filename, int64_t start_line);
  // Returns a location id, deduplicated on (mapping_id, address, lines). `lines` innermost first.
  // mapping_id 0 means no mapping.
  uint64_t AddLocation(uint64_t mapping_id, uint64_t address, const std::vector<LineInfo>& lines);
  // Adds a sample (location ids leaf first). Samples with the same stack and labels are merged
  // by summing values. values.size() must equal the number of sample types.
  void AddSample(const std::vector<uint64_t>& location_ids, const std::vector<int64_t>& values,
                 const std::vector<Label>& labels = {});

  // Structural validity in the spirit of google/pprof's CheckValid: ids nonzero and unique,
  // references resolvable, value counts match, string indices in range, mappings non-overlapping.
  absl::Status CheckValid() const;
  // Finalizes, validates and returns the gzipped serialized profile.
  absl::StatusOr<std::string> Finish();

  const perftools::profiles::Profile& profile() const { return profile_; }

 private:
  // implementation-defined dedup tables
  struct Tables;
  perftools::profiles::Profile profile_;
  std::shared_ptr<Tables> tables_;
};

// gzip (RFC 1952) helpers used by Finish and by tests.
absl::StatusOr<std::string> Gzip(absl::string_view data);
absl::StatusOr<std::string> Gunzip(absl::string_view data);

}  // namespace pprof_encoder

#endif  // PPROF_SIDECAR_PPROF_ENCODER_BUILDER_H_
