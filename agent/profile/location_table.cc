#include "agent/profile/location_table.h"

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

std::vector<pprof_encoder::LineInfo> ToLineInfos(const SourceLines& lines) {
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

class LocationTable::Image {
 public:
  uint32_t pid = 0;
  std::unique_ptr<ProcessSymbolizer::Session> session;
  // By (pc, is_return_address): frames and their locations.
  std::map<std::pair<uint64_t, bool>, UserFrame> frames;
  std::map<std::pair<uint64_t, bool>, uint64_t> user_locs, kernel_locs;
  std::vector<uint64_t> mapping_ids;              // session mapping index -> builder mapping id
};

LocationTable::LocationTable(pprof_encoder::Builder* builder, ProcessSymbolizer* symbolizer)
    : builder_(builder), symbolizer_(symbolizer) {}

LocationTable::~LocationTable() = default;

LocationTable::Image* LocationTable::ImageOf(
    uint32_t pid, const std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>& snapshot) {
  std::unique_ptr<Image>& img = images_[{pid, snapshot.get()}];
  if (!img) {
    img = std::make_unique<Image>();
    img->pid = pid;
    if (symbolizer_) {
      img->session =
          snapshot ? symbolizer_->NewSession(pid, snapshot) : symbolizer_->NewSession(pid);
    }
  }
  return img.get();
}

const LocationTable::UserFrame& LocationTable::User(Image* image, uint64_t pc,
                                                    bool is_return_address) {
  auto it = image->frames.find({pc, is_return_address});
  if (it != image->frames.end()) return it->second;
  UserFrame f;
  if (image->session) f.resolved = image->session->ResolveUser(pc, is_return_address);
  const SourceLines& lines = f.resolved.lines;
  if (!lines.empty()) {
    f.innermost = lines.front().function;
    f.physical = lines.back().function;
    f.go_wrapper = lines.size() == 1 && lines[0].go_wrapper;
  }
  return image->frames.emplace(std::make_pair(pc, is_return_address), std::move(f)).first->second;
}

uint64_t LocationTable::UserLocation(Image* image, uint64_t pc, bool is_return_address,
                                     uint64_t address) {
  auto it = image->user_locs.find({pc, is_return_address});
  if (it != image->user_locs.end()) return it->second;
  const UserFrame& f = User(image, pc, is_return_address);
  const SourceLines& lines = f.resolved.lines;
  const size_t kept = lines.size() > 1 && lines.back().go_wrapper ? lines.size() - 1 : lines.size();
  const uint64_t loc = builder_->AddLocation(
      MappingId(image, f.resolved.mapping), address,
      ToLineInfos(SourceLines(lines.begin(), lines.begin() + kept)));
  image->user_locs.emplace(std::make_pair(pc, is_return_address), loc);
  return loc;
}

uint64_t LocationTable::KernelLocation(Image* image, uint64_t ip, bool is_return_address,
                                       bool* unsymbolized) {
  auto it = image->kernel_locs.find({ip, is_return_address});
  if (it != image->kernel_locs.end()) {
    *unsymbolized = it->second == named_["[kernel]"];
    return it->second;
  }
  ResolvedFrame f;
  if (image->session) f = image->session->ResolveKernel(ip, is_return_address);
  *unsymbolized = f.lines.empty();
  const uint64_t loc = f.lines.empty() ? NamedLocation("[kernel]")
                                       : builder_->AddLocation(0, 0, ToLineInfos(f.lines));
  image->kernel_locs.emplace(std::make_pair(ip, is_return_address), loc);
  return loc;
}

uint64_t LocationTable::NamedLocation(const std::string& function) {
  uint64_t& loc = named_[function];
  if (loc == 0)
    loc = builder_->AddLocation(0, 0, ToLineInfos({SourceLine{function, function, "", 0, 0}}));
  return loc;
}

uint64_t LocationTable::MappingId(Image* image, int mapping) {
  if (mapping < 0 || !image->session) return 0;
  while (image->mapping_ids.size() <= static_cast<size_t>(mapping)) {
    const MappingView& v = image->session->mappings()[image->mapping_ids.size()];
    pprof_encoder::MappingInfo mi;
    mi.memory_start = v.start;
    mi.memory_limit = v.limit;
    mi.file_offset = v.offset;
    mi.filename = v.path;
    mi.build_id = v.build_id;
    mi.has_functions = v.has_functions;
    mi.has_filenames = v.has_filenames;
    mi.has_line_numbers = v.has_line_numbers;
    mi.has_inline_frames = v.has_inline_frames;
    image->mapping_ids.push_back(builder_->AddMapping(mi));
  }
  return image->mapping_ids[mapping];
}

std::vector<std::string> LocationTable::MapsErrors() const {
  std::map<uint32_t, std::string> by_pid;
  for (const auto& [key, img] : images_) {
    if (img->session && !img->session->maps_error().empty()) {
      by_pid.emplace(key.first, img->session->maps_error());
    }
  }
  std::vector<std::string> out;
  for (const auto& [pid, e] : by_pid)
    out.push_back(absl::StrCat("pprof-sidecar: pid ", pid, ": ", e));
  return out;
}

}  // namespace pprof_sidecar
