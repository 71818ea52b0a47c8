#include "agent/symbolize/proc_maps.h"

#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

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
  // On the heap: 64 KiB on the stack stays resident in every thread that ever read maps (each of
  // the HTTP server's workers builds profiles).
  std::vector<char> buf(65536);
  while (true) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    text.append(buf.data(), static_cast<size_t>(n));
  }
  close(fd);
  auto parsed = ParseProcMaps(text);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(path, ": ", parsed.status().message()));
  }
  return parsed;
}

namespace {

// The mapped file reached without map_files and without the target's root, accepted only if it
// is provably the mapped file: /proc/<pid>/exe when it names the mapped path, else the mapped
// path in the agent's own root when device and inode are the ones maps gives.
absl::StatusOr<OpenedTargetFile> OpenSameFileAsMapped(pid_t pid, const MapEntry& e) {
  OpenedTargetFile out;
  out.path = absl::StrCat("/proc/", pid, "/exe");
  char link[4096];
  const ssize_t n = readlink(out.path.c_str(), link, sizeof(link) - 1);
  if (n > 0 && absl::string_view(link, static_cast<size_t>(n)) == e.path) {
    absl::StatusOr<TargetFd> fd = OpenRegularFile(out.path);
    if (fd.ok()) {
      out.fd = *std::move(fd);
      return out;
    }
  }
  absl::StatusOr<TargetFd> fd = OpenRegularFile(e.path);
  if (!fd.ok()) return fd.status();
  if (fd->ino() != e.inode || major(fd->dev()) != e.dev_major || minor(fd->dev()) != e.dev_minor) {
    return absl::NotFoundError(absl::StrCat(e.path, ": not the file the target mapped"));
  }
  out.fd = *std::move(fd);
  out.path = e.path;
  return out;
}

}  // namespace

absl::StatusOr<OpenedTargetFile> OpenTargetFile(pid_t pid, const MapEntry& e) {
  // The kernel names map_files entries with lowercase hex, no 0x and no zero padding.
  OpenedTargetFile out;
  out.path = absl::StrFormat("/proc/%d/map_files/%x-%x", pid, e.start, e.end);
  absl::StatusOr<TargetFd> fd = OpenRegularFile(out.path);
  // Only a refused or vanished link falls back to the path; a file refused for what it is
  // (too large, ...) is the same file either way.
  if (fd.ok() || !(absl::IsPermissionDenied(fd.status()) || absl::IsNotFound(fd.status()))) {
    if (!fd.ok()) return fd.status();
    // The link names what is mapped at that range now: another file if the process replaced the
    // mapping (or exec'd) since its maps were read.
    if (e.inode != 0 && fd->ino() != e.inode) {
      return absl::NotFoundError(
          absl::StrCat(out.path, ": no longer maps inode ", e.inode, " (", e.path, ")"));
    }
    out.fd = *std::move(fd);
    return out;
  }
  const std::string root = absl::StrCat("/proc/", pid, "/root");
  absl::StatusOr<TargetFd> in_root = OpenRegularFileInRoot(root, e.path);
  if (in_root.ok()) {
    out.fd = *std::move(in_root);
    out.path = absl::StrCat(root, e.path);
    return out;
  }
  // The target's root is not the root its maps were written against when the target was chrooted
  // (or pivoted) within the agent's mount namespace: maps paths are relative to the reader's root.
  absl::StatusOr<OpenedTargetFile> same_file = OpenSameFileAsMapped(pid, e);
  if (same_file.ok()) return same_file;
  return absl::Status(in_root.status().code(),
                      absl::StrCat(fd.status().message(), "; ", in_root.status().message()));
}

}  // namespace pprof_sidecar
