#include "agent/symbolize/go_buildinfo.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace pprof_sidecar {
namespace {

constexpr absl::string_view kMagic("\xff Go buildinf:", 14);
constexpr size_t kHeaderSize = 32;
constexpr uint8_t kFlagInline = 2;

// The version string of a build info blob starting at `blob`.
absl::StatusOr<std::string> ParseBlob(absl::string_view blob) {
  if (blob.size() < kHeaderSize) return absl::DataLossError("Go build info: truncated header");
  if ((static_cast<uint8_t>(blob[15]) & kFlagInline) == 0) {
    return absl::NotFoundError("Go build info in the pre-1.18 pointer layout");
  }
  uint64_t len = 0;
  size_t i = kHeaderSize;
  for (int shift = 0;; shift += 7) {
    if (i >= blob.size() || shift > 28) return absl::DataLossError("Go build info: bad length");
    const uint8_t b = static_cast<uint8_t>(blob[i++]);
    len |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) break;
  }
  if (len == 0 || len > 256 || blob.size() - i < len) {
    return absl::DataLossError("Go build info: bad version string");
  }
  return std::string(blob.substr(i, len));
}

}  // namespace

absl::StatusOr<std::string> GoBuildVersion(const ElfFile& elf) {
  if (const ElfSection* s = elf.FindSection(".go.buildinfo")) {
    absl::string_view d = elf.SectionData(*s);
    if (d.substr(0, kMagic.size()) == kMagic) return ParseBlob(d);
  }
  // Without section headers: the blob is 16-aligned in a loaded segment, near the data start.
  absl::string_view d = elf.data();
  for (const ElfSegment& seg : elf.load_segments()) {
    if (seg.offset > d.size()) continue;
    absl::string_view sd = d.substr(seg.offset, seg.filesz);
    for (size_t i = 0; i + kHeaderSize <= sd.size(); i += 16) {
      if (sd.substr(i, kMagic.size()) == kMagic) return ParseBlob(sd.substr(i));
    }
  }
  return absl::NotFoundError("no Go build info in the binary");
}

std::optional<GoRelease> ParseGoRelease(absl::string_view v) {
  const size_t at = v.find("go1.");
  if (at == absl::string_view::npos) return std::nullopt;
  v.remove_prefix(at + 4);
  GoRelease r;
  r.major = 1;
  auto number = [&v](int* out) {
    size_t n = 0;
    while (n < v.size() && absl::ascii_isdigit(static_cast<unsigned char>(v[n]))) ++n;
    if (n == 0 || n > 6 || !absl::SimpleAtoi(v.substr(0, n), out)) return false;
    v.remove_prefix(n);
    return true;
  };
  if (!number(&r.minor)) return std::nullopt;
  if (!v.empty() && v[0] == '.') {
    v.remove_prefix(1);
    if (!number(&r.patch)) return std::nullopt;
  }
  return r;
}

}  // namespace pprof_sidecar
