#include "agent/symbolize/proc_maps.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace pprof_sidecar {
namespace {

constexpr absl::string_view kDeletedSuffix = " (deleted)";

// Splits off the next space-delimited field of `line` (skipping leading spaces).
absl::string_view NextField(absl::string_view* line) {
  size_t start = line->find_first_not_of(' ');
  if (start == absl::string_view::npos) {
    *line = {};
    return {};
  }
  line->remove_prefix(start);
  size_t end = line->find(' ');
  absl::string_view field = line->substr(0, end);
  line->remove_prefix(end == absl::string_view::npos ? line->size() : end);
  return field;
}

bool ParseHex(absl::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 16) return false;
  return absl::SimpleHexAtoi(s, out) &&
         s.find_first_not_of("0123456789abcdefABCDEF") == absl::string_view::npos;
}

bool ParseLine(absl::string_view line, MapEntry* e) {
  absl::string_view range = NextField(&line);
  absl::string_view perms = NextField(&line);
  absl::string_view offset = NextField(&line);
  absl::string_view dev = NextField(&line);
  absl::string_view inode = NextField(&line);

  size_t dash = range.find('-');
  if (dash == absl::string_view::npos || !ParseHex(range.substr(0, dash), &e->start) ||
      !ParseHex(range.substr(dash + 1), &e->end) || e->end < e->start) {
    return false;
  }
  if (perms.size() != 4) return false;
  e->read = perms[0] == 'r';
  e->write = perms[1] == 'w';
  e->exec = perms[2] == 'x';
  e->shared = perms[3] == 's';
  if (!ParseHex(offset, &e->offset)) return false;
  size_t colon = dev.find(':');
  uint64_t major, minor;
  if (colon == absl::string_view::npos || !ParseHex(dev.substr(0, colon), &major) ||
      !ParseHex(dev.substr(colon + 1), &minor) || major > UINT32_MAX || minor > UINT32_MAX) {
    return false;
  }
  e->dev_major = static_cast<uint32_t>(major);
  e->dev_minor = static_cast<uint32_t>(minor);
  if (inode.empty() || inode.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(inode, &e->inode)) {
    return false;
  }
  // The path is the rest of the line after the padding; it may itself contain spaces.
  size_t p = line.find_first_not_of(' ');
  absl::string_view path = p == absl::string_view::npos ? absl::string_view() : line.substr(p);
  if (absl::EndsWith(path, kDeletedSuffix)) {
    path.remove_suffix(kDeletedSuffix.size());
    e->deleted = true;
  }
  e->path = std::string(path);
  return true;
}

}  // namespace

absl::StatusOr<std::vector<MapEntry>> ParseProcMaps(absl::string_view text) {
  std::vector<MapEntry> out;
  int lineno = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++lineno;
    if (line.empty()) continue;
    MapEntry e;
    if (!ParseLine(line, &e)) {
      return absl::InvalidArgumentError(absl::StrCat("malformed maps line ", lineno, ": \"",
                                                     absl::CHexEscape(line.substr(0, 200)), "\""));
    }
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<MapEntry>> ReadProcMaps(pid_t pid) {
  std::string path = absl::StrCat("/proc/", pid, "/maps");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  std::string text;
  char buf[65536];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  auto parsed = ParseProcMaps(text);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(path, ": ", parsed.status().message()));
  }
  return parsed;
}

std::string TargetFilePath(pid_t pid, const MapEntry& e) {
  // The kernel names map_files entries with lowercase hex, no 0x and no zero padding.
  std::string mf = absl::StrFormat("/proc/%d/map_files/%x-%x", pid, e.start, e.end);
  int fd = open(mf.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    close(fd);
    return mf;
  }
  return absl::StrCat("/proc/", pid, "/root", e.path);
}

}  // namespace pprof_sidecar
