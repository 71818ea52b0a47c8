#include "pprof_encoder/builder.h"

#include <zlib.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pprof_encoder {
namespace {

using perftools::profiles::Profile;

// Upper bound on Gunzip output, so a hostile or corrupt stream cannot exhaust memory.
constexpr size_t kMaxGunzipBytes = size_t{1} << 30;

}  // namespace

struct Builder::Tables {
  absl::flat_hash_map<std::string, int64_t> strings;
  // (name, system_name, filename, start_line) -> function id.
  absl::flat_hash_map<std::tuple<int64_t, int64_t, int64_t, int64_t>, uint64_t> functions;
  // (start, limit, offset, filename, build_id, flag bits) -> mapping id.
  absl::flat_hash_map<std::tuple<uint64_t, uint64_t, uint64_t, int64_t, int64_t, int>, uint64_t>
      mappings;
  // (mapping_id, address, [(function_id, line)...]) -> location id.
  absl::flat_hash_map<std::tuple<uint64_t, uint64_t, std::vector<std::pair<uint64_t, int64_t>>>,
                      uint64_t>
      locations;
  // (location ids, sorted labels as (key, str, num, num_unit)) -> index into profile.sample.
  absl::flat_hash_map<
      std::pair<std::vector<uint64_t>, std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>>,
      int>
      samples;
};

Builder::Builder() : tables_(std::make_shared<Tables>()) { StringId(""); }

Builder::Builder(const Builder& other)
    : profile_(other.profile_), tables_(std::make_shared<Tables>(*other.tables_)) {}

Builder& Builder::operator=(const Builder& other) {
  if (this != &other) {
    profile_ = other.profile_;
    tables_ = std::make_shared<Tables>(*other.tables_);
  }
  return *this;
}

int64_t Builder::StringId(absl::string_view s) {
  auto it = tables_->strings.find(s);
  if (it != tables_->strings.end()) return it->second;
  int64_t id = profile_.string_table_size();
  profile_.add_string_table(std::string(s));
  tables_->strings.emplace(std::string(s), id);
  return id;
}

void Builder::AddSampleType(absl::string_view type, absl::string_view unit) {
  auto* vt = profile_.add_sample_type();
  vt->set_type(StringId(type));
  vt->set_unit(StringId(unit));
}

void Builder::SetPeriodType(absl::string_view type, absl::string_view unit) {
  auto* vt = profile_.mutable_period_type();
  vt->set_type(StringId(type));
  vt->set_unit(StringId(unit));
}

void Builder::SetPeriod(int64_t period) { profile_.set_period(period); }
void Builder::SetTimeNanos(int64_t t) { profile_.set_time_nanos(t); }
void Builder::SetDurationNanos(int64_t d) { profile_.set_duration_nanos(d); }
void Builder::SetDefaultSampleType(absl::string_view type) {
  profile_.set_default_sample_type(StringId(type));
}
void Builder::AddComment(absl::string_view comment) { profile_.add_comment(StringId(comment)); }
void Builder::SetDropFrames(absl::string_view regex) { profile_.set_drop_frames(StringId(regex)); }

uint64_t Builder::AddMapping(const MappingInfo& m) {
  int flags = (m.has_functions ? 1 : 0) | (m.has_filenames ? 2 : 0) | (m.has_line_numbers ? 4 : 0) |
              (m.has_inline_frames ? 8 : 0);
  auto key = std::make_tuple(m.memory_start, m.memory_limit, m.file_offset, StringId(m.filename),
                             StringId(m.build_id), flags);
  auto it = tables_->mappings.find(key);
  if (it != tables_->mappings.end()) return it->second;
  uint64_t id = profile_.mapping_size() + 1;
  auto* pm = profile_.add_mapping();
  pm->set_id(id);
  pm->set_memory_start(m.memory_start);
  pm->set_memory_limit(m.memory_limit);
  pm->set_file_offset(m.file_offset);
  pm->set_filename(std::get<3>(key));
  pm->set_build_id(std::get<4>(key));
  pm->set_has_functions(m.has_functions);
  pm->set_has_filenames(m.has_filenames);
  pm->set_has_line_numbers(m.has_line_numbers);
  pm->set_has_inline_frames(m.has_inline_frames);
  tables_->mappings.emplace(key, id);
  return id;
}

uint64_t Builder::AddFunction(absl::string_view name, absl::string_view system_name,
                              absl::string_view filename, int64_t start_line) {
  auto key = std::make_tuple(StringId(name), StringId(system_name), StringId(filename), start_line);
  auto it = tables_->functions.find(key);
  if (it != tables_->functions.end()) return it->second;
  uint64_t id = profile_.function_size() + 1;
  auto* f = profile_.add_function();
  f->set_id(id);
  f->set_name(std::get<0>(key));
  f->set_system_name(std::get<1>(key));
  f->set_filename(std::get<2>(key));
  f->set_start_line(start_line);
  tables_->functions.emplace(key, id);
  return id;
}

uint64_t Builder::AddLocation(uint64_t mapping_id, uint64_t address,
                              const std::vector<LineInfo>& lines) {
  std::vector<std::pair<uint64_t, int64_t>> resolved;
  resolved.reserve(lines.size());
  for (const LineInfo& l : lines) {
    absl::string_view sys = l.system_name.empty() ? l.function : l.system_name;
    resolved.emplace_back(AddFunction(l.function, sys, l.filename, l.start_line), l.line);
  }
  auto key = std::make_tuple(mapping_id, address, std::move(resolved));
  auto it = tables_->locations.find(key);
  if (it != tables_->locations.end()) return it->second;
  uint64_t id = profile_.location_size() + 1;
  auto* loc = profile_.add_location();
  loc->set_id(id);
  loc->set_mapping_id(mapping_id);
  loc->set_address(address);
  for (const auto& [fid, line] : std::get<2>(key)) {
    auto* ln = loc->add_line();
    ln->set_function_id(fid);
    ln->set_line(line);
  }
  tables_->locations.emplace(std::move(key), id);
  return id;
}

void Builder::AddSample(const std::vector<uint64_t>& location_ids,
                        const std::vector<int64_t>& values, const std::vector<Label>& labels) {
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> lkey;
  lkey.reserve(labels.size());
  for (const Label& l : labels) {
    lkey.emplace_back(StringId(l.key), l.str.empty() ? 0 : StringId(l.str), l.num,
                      l.num_unit.empty() ? 0 : StringId(l.num_unit));
  }
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> sorted = lkey;
  std::sort(sorted.begin(), sorted.end());
  auto key = std::make_pair(location_ids, std::move(sorted));
  auto it = tables_->samples.find(key);
  if (it != tables_->samples.end()) {
    auto* s = profile_.mutable_sample(it->second);
    // A value-count mismatch is left for CheckValid to report rather than silently merged.
    if (s->value_size() == static_cast<int>(values.size())) {
      for (size_t i = 0; i < values.size(); ++i) s->set_value(i, s->value(i) + values[i]);
      return;
    }
  }
  int index = profile_.sample_size();
  auto* s = profile_.add_sample();
  for (uint64_t id : location_ids) s->add_location_id(id);
  for (int64_t v : values) s->add_value(v);
  for (const auto& [k, str, num, unit] : lkey) {
    auto* pl = s->add_label();
    pl->set_key(k);
    pl->set_str(str);
    pl->set_num(num);
    pl->set_num_unit(unit);
  }
  if (it == tables_->samples.end()) tables_->samples.emplace(std::move(key), index);
}

absl::Status Builder::CheckValid() const {
  const Profile& p = profile_;
  const int64_t nstr = p.string_table_size();
  if (nstr == 0 || !p.string_table(0).empty()) {
    return absl::InvalidArgumentError("string_table[0] must be the empty string");
  }
  auto str_ok = [nstr](int64_t i) { return i >= 0 && i < nstr; };
  auto check_str = [&](int64_t i, absl::string_view what) -> absl::Status {
    if (str_ok(i)) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": string index ", i, " out of range [0, ", nstr, ")"));
  };

  for (int i = 0; i < p.sample_type_size(); ++i) {
    const auto& vt = p.sample_type(i);
    if (auto s = check_str(vt.type(), absl::StrCat("sample_type[", i, "].type")); !s.ok()) return s;
    if (auto s = check_str(vt.unit(), absl::StrCat("sample_type[", i, "].unit")); !s.ok()) return s;
  }
  if (p.has_period_type()) {
    if (auto s = check_str(p.period_type().type(), "period_type.type"); !s.ok()) return s;
    if (auto s = check_str(p.period_type().unit(), "period_type.unit"); !s.ok()) return s;
  }
  if (auto s = check_str(p.drop_frames(), "drop_frames"); !s.ok()) return s;
  if (auto s = check_str(p.keep_frames(), "keep_frames"); !s.ok()) return s;
  for (int i = 0; i < p.comment_size(); ++i) {
    if (auto s = check_str(p.comment(i), absl::StrCat("comment[", i, "]")); !s.ok()) return s;
  }
  if (p.default_sample_type() != 0) {
    if (auto s = check_str(p.default_sample_type(), "default_sample_type"); !s.ok()) return s;
    bool found = false;
    for (const auto& vt : p.sample_type()) found |= vt.type() == p.default_sample_type();
    if (!found) {
      return absl::InvalidArgumentError(absl::StrCat("default_sample_type \"",
                                                     p.string_table(p.default_sample_type()),
                                                     "\" is not one of the sample types"));
    }
  }

  // Mappings: ids, strings, ranges.
  absl::flat_hash_map<uint64_t, const perftools::profiles::Mapping*> mappings;
  for (const auto& m : p.mapping()) {
    if (m.id() == 0) return absl::InvalidArgumentError("mapping with reserved id 0");
    if (!mappings.emplace(m.id(), &m).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate mapping id ", m.id()));
    }
    if (auto s = check_str(m.filename(), absl::StrCat("mapping ", m.id(), " filename")); !s.ok()) {
      return s;
    }
    if (auto s = check_str(m.build_id(), absl::StrCat("mapping ", m.id(), " build_id")); !s.ok()) {
      return s;
    }
    if (m.memory_limit() < m.memory_start()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mapping %d: limit %#x below start %#x", m.id(), m.memory_limit(), m.memory_start()));
    }
  }
  std::vector<const perftools::profiles::Mapping*> by_start;
  for (const auto& m : p.mapping()) {
    if (m.memory_limit() > m.memory_start()) by_start.push_back(&m);
  }
  std::sort(by_start.begin(), by_start.end(),
            [](const auto* a, const auto* b) { return a->memory_start() < b->memory_start(); });
  for (size_t i = 1; i < by_start.size(); ++i) {
    if (by_start[i]->memory_start() < by_start[i - 1]->memory_limit()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mappings %d [%#x,%#x) and %d [%#x,%#x) overlap", by_start[i - 1]->id(),
          by_start[i - 1]->memory_start(), by_start[i - 1]->memory_limit(), by_start[i]->id(),
          by_start[i]->memory_start(), by_start[i]->memory_limit()));
    }
  }

  absl::flat_hash_set<uint64_t> functions;
  for (const auto& f : p.function()) {
    if (f.id() == 0) return absl::InvalidArgumentError("function with reserved id 0");
    if (!functions.insert(f.id()).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate function id ", f.id()));
    }
    std::string what = absl::StrCat("function ", f.id());
    if (auto s = check_str(f.name(), what + " name"); !s.ok()) return s;
    if (auto s = check_str(f.system_name(), what + " system_name"); !s.ok()) return s;
    if (auto s = check_str(f.filename(), what + " filename"); !s.ok()) return s;
  }

  absl::flat_hash_set<uint64_t> locations;
  for (const auto& l : p.location()) {
    if (l.id() == 0) return absl::InvalidArgumentError("location with reserved id 0");
    if (!locations.insert(l.id()).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate location id ", l.id()));
    }
    if (l.mapping_id() != 0) {
      auto it = mappings.find(l.mapping_id());
      if (it == mappings.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("location ", l.id(), " references unknown mapping ", l.mapping_id()));
      }
      const auto* m = it->second;
      // An address outside its mapping would be attributed to the wrong binary by pprof.
      if (l.address() != 0 && m->memory_limit() > m->memory_start() &&
          (l.address() < m->memory_start() || l.address() >= m->memory_limit())) {
        return absl::InvalidArgumentError(
            absl::StrFormat("location %d address %#x outside mapping %d [%#x,%#x)", l.id(),
                            l.address(), m->id(), m->memory_start(), m->memory_limit()));
      }
    }
    for (const auto& ln : l.line()) {
      if (!functions.contains(ln.function_id())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "location ", l.id(), " line references unknown function ", ln.function_id()));
      }
    }
  }

  if (p.sample_type_size() == 0 && p.sample_size() != 0) {
    return absl::InvalidArgumentError("samples present but no sample types");
  }
  for (int i = 0; i < p.sample_size(); ++i) {
    const auto& s = p.sample(i);
    if (s.value_size() != p.sample_type_size()) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", i, " has ", s.value_size(),
                                                     " values, want ", p.sample_type_size()));
    }
    for (uint64_t id : s.location_id()) {
      if (!locations.contains(id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("sample ", i, " references unknown location ", id));
      }
    }
    for (const auto& l : s.label()) {
      std::string what = absl::StrCat("sample ", i, " label");
      if (auto st = check_str(l.key(), what + " key"); !st.ok()) return st;
      if (auto st = check_str(l.str(), what + " str"); !st.ok()) return st;
      if (auto st = check_str(l.num_unit(), what + " num_unit"); !st.ok()) return st;
      if (l.key() == 0) return absl::InvalidArgumentError(what + " has an empty key");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Builder::Finish() {
  if (absl::Status s = CheckValid(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("invalid profile: ", s.message()));
  }
  std::string raw;
  if (!profile_.SerializeToString(&raw)) {
    return absl::InternalError("serializing profile failed");
  }
  return Gzip(raw);
}

absl::StatusOr<std::string> Gzip(absl::string_view data) {
  z_stream zs{};
  // windowBits 15 + 16 selects the gzip wrapper. Fastest level, as runtime/pprof writes its
  // profiles (gzip.BestSpeed): level 6 made compression ~1/4 of a heap request's CPU.
  if (int rc = deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
      rc != Z_OK) {
    return absl::InternalError(absl::StrCat("deflateInit2: zlib error ", rc));
  }
  std::string out;
  // On the heap: 64 KiB on the stack stays resident in each of the HTTP server's threads.
  std::vector<char> buf(64 * 1024);
  size_t off = 0;
  int flush = Z_NO_FLUSH;
  int rc = Z_OK;
  do {
    // avail_in is a uInt: feed large inputs in chunks.
    size_t chunk = std::min<size_t>(data.size() - off, size_t{1} << 30);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + off));
    zs.avail_in = static_cast<uInt>(chunk);
    off += chunk;
    flush = off == data.size() ? Z_FINISH : Z_NO_FLUSH;
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf.data());
      zs.avail_out = static_cast<uInt>(buf.size());
      rc = deflate(&zs, flush);
      out.append(buf.data(), buf.size() - zs.avail_out);
    } while (zs.avail_out == 0);
  } while (flush != Z_FINISH);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) return absl::InternalError(absl::StrCat("deflate: zlib error ", rc));
  return out;
}

absl::StatusOr<std::string> Gunzip(absl::string_view data) {
  z_stream zs{};
  if (int rc = inflateInit2(&zs, 15 + 16); rc != Z_OK) {
    return absl::InternalError(absl::StrCat("inflateInit2: zlib error ", rc));
  }
  std::string out;
  std::vector<char> buf(64 * 1024);  // on the heap, as in Gzip
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  size_t in_left = data.size();
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && in_left > 0) {
      uInt chunk = static_cast<uInt>(std::min<size_t>(in_left, 1u << 30));
      zs.avail_in = chunk;
      in_left -= chunk;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      std::string msg = zs.msg ? zs.msg : "";
      inflateEnd(&zs);
      if (rc == Z_BUF_ERROR) return absl::DataLossError("gunzip: truncated gzip stream");
      return absl::DataLossError(absl::StrCat("gunzip: zlib error ", rc, " ", msg));
    }
    out.append(buf.data(), buf.size() - zs.avail_out);
    if (out.size() > kMaxGunzipBytes) {
      inflateEnd(&zs);
      return absl::ResourceExhaustedError("gunzip: output exceeds 1 GiB");
    }
    if (rc == Z_OK && zs.avail_in == 0 && in_left == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      return absl::DataLossError("gunzip: truncated gzip stream");
    }
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace pprof_encoder
