#include "agent/oom/memory_watch.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/symbolize/target_file.h"

namespace pprof_sidecar {
namespace {

constexpr uint64_t kNoLimitAtOrAbove = uint64_t{1} << 62;

// Reads a small file from offset 0 (cgroup and /proc files regenerate on every read).
absl::StatusOr<std::string> PreadSmall(int fd, const std::string& what) {
  char buf[128];
  ssize_t n;
  do {
    n = pread(fd, buf, sizeof(buf) - 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    std::string msg = absl::StrCat("read ", what, ": ", strerror(err));
    return err == ESRCH ? absl::NotFoundError(msg) : absl::InternalError(msg);
  }
  return std::string(buf, static_cast<size_t>(n));
}

// An absolute path without "." components whose ".." components, if any, all come first (as the
// kernel writes a cgroup outside the reader's namespace). Sets `up` when there are some.
bool IsCgroupPath(absl::string_view p, bool* up) {
  if (p.empty() || p[0] != '/') return false;
  *up = false;
  bool down = false;
  for (absl::string_view part : absl::StrSplit(p.substr(1), '/', absl::SkipEmpty())) {
    if (part == ".") return false;
    if (part == "..") {
      if (down) return false;
      *up = true;
    } else {
      down = true;
    }
  }
  return true;
}

// Opens `file` in `dir`, where `dir` is either inside `root` (a target's root: resolved there
// only) or, with an empty root, one of the agent's own paths.
absl::StatusOr<int> OpenIn(const std::string& root, const std::string& dir,
                           const std::string& file) {
  const std::string path = absl::StrCat(dir, "/", file);
  absl::StatusOr<TargetFd> fd =
      root.empty() ? OpenRegularFile(path, 1 << 20) : OpenRegularFileInRoot(root, path, 1 << 20);
  if (!fd.ok()) return fd.status();
  return fd->release();
}

}  // namespace

absl::StatusOr<CgroupRef> ParseProcCgroup(absl::string_view text) {
  std::optional<CgroupRef> v1, v2;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    bool up = false;
    if (f.size() != 3 || !IsCgroupPath(f[2], &up)) continue;
    if (f[0] == "0" && f[1].empty()) {
      v2 = CgroupRef{true, std::string(f[2]), up};
      continue;
    }
    for (absl::string_view c : absl::StrSplit(f[1], ',')) {
      if (c == "memory") v1 = CgroupRef{false, std::string(f[2]), up};
    }
  }
  if (v1) return *v1;
  if (v2) return *v2;
  return absl::NotFoundError("no memory cgroup (v1 \"memory\" or v2 \"0::\") in /proc/PID/cgroup");
}

absl::StatusOr<std::optional<uint64_t>> ParseMemoryLimit(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  if (text == "max") return std::optional<uint64_t>();
  uint64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) {
    return absl::InvalidArgumentError(absl::StrCat("memory limit \"", text, "\" is not a number"));
  }
  if (v >= kNoLimitAtOrAbove) return std::optional<uint64_t>();
  return std::optional<uint64_t>(v);
}

absl::StatusOr<uint64_t> ParseMemoryUsage(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  uint64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) {
    return absl::InvalidArgumentError(absl::StrCat("memory usage \"", text, "\" is not a number"));
  }
  return v;
}

void MemoryWatcher::Close() {
  for (int* fd : {&statm_fd_, &usage_fd_, &limit_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  pid_ = 0;
  cgroup_desc_.clear();
}

absl::Status MemoryWatcher::Open(pid_t pid) {
  Close();
  const std::string proc = absl::StrCat(opts_.proc_root, "/", pid);
  statm_fd_ = open((proc + "/statm").c_str(), O_RDONLY | O_CLOEXEC);
  if (statm_fd_ < 0) {
    return absl::NotFoundError(absl::StrCat("open ", proc, "/statm: ", strerror(errno)));
  }
  pid_ = pid;
  const int cg_fd = open((proc + "/cgroup").c_str(), O_RDONLY | O_CLOEXEC);
  if (cg_fd < 0) return absl::OkStatus();  // RSS only
  std::string all;
  // /proc/PID/cgroup may exceed one small read: read it whole (bounded).
  char buf[4096];
  for (ssize_t n; all.size() < (64 << 10) &&
                  (n = pread(cg_fd, buf, sizeof(buf), static_cast<off_t>(all.size()))) > 0;) {
    all.append(buf, static_cast<size_t>(n));
  }
  close(cg_fd);
  absl::StatusOr<CgroupRef> ref = ParseProcCgroup(all);
  if (!ref.ok()) return absl::OkStatus();
  const char* usage_file = ref->v2 ? "memory.current" : "memory.usage_in_bytes";
  const char* limit_file = ref->v2 ? "memory.max" : "memory.limit_in_bytes";
  const std::string sub = ref->v2 ? "" : "/memory";
  const std::string in_root = sub + (ref->path == "/" ? "" : ref->path);
  // (root, dir): the target's view of its own cgroup at its path, then at the mount's root (its
  // own cgroup with a cgroup namespace or a v1 bind mount); then the agent's view at the path.
  const std::string troot = proc + "/root";
  std::vector<std::pair<std::string, std::string>> candidates = {{troot, "/sys/fs/cgroup" + sub}};
  if (!ref->outside_namespace) {
    candidates.insert(candidates.begin(), {troot, "/sys/fs/cgroup" + in_root});
    candidates.push_back({"", opts_.cgroup_root + in_root});
  }
  for (const auto& [root, dir] : candidates) {
    absl::StatusOr<int> lfd = OpenIn(root, dir, limit_file);
    if (!lfd.ok()) continue;
    absl::StatusOr<int> ufd = OpenIn(root, dir, usage_file);
    if (!ufd.ok()) {
      close(*lfd);
      continue;
    }
    limit_fd_ = *lfd;
    usage_fd_ = *ufd;
    cgroup_desc_ = absl::StrCat("cgroup ", ref->v2 ? "v2 " : "v1 ", root, dir);
    break;
  }
  return absl::OkStatus();
}

absl::StatusOr<MemoryReading> MemoryWatcher::Read(pid_t pid, uint64_t start_time) {
  if (pid != pid_ || start_time != start_time_) {
    absl::Status st = Open(pid);
    if (!st.ok()) return st;
    start_time_ = start_time;
  }
  MemoryReading r;
  absl::StatusOr<std::string> statm = PreadSmall(statm_fd_, "statm");
  if (!statm.ok()) {
    Close();
    return statm.status();
  }
  std::vector<absl::string_view> f = absl::StrSplit(*statm, ' ');
  uint64_t pages = 0;
  if (f.size() < 2 || !absl::SimpleAtoi(f[1], &pages)) {
    return absl::InternalError(absl::StrCat("unexpected statm \"", *statm, "\""));
  }
  r.rss = pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  r.usage = r.rss;
  if (usage_fd_ >= 0) {
    absl::StatusOr<std::string> u = PreadSmall(usage_fd_, cgroup_desc_);
    absl::StatusOr<std::string> l = PreadSmall(limit_fd_, cgroup_desc_);
    absl::StatusOr<uint64_t> usage = u.ok() ? ParseMemoryUsage(*u) : u.status();
    absl::StatusOr<std::optional<uint64_t>> limit =
        l.ok() ? ParseMemoryLimit(*l) : absl::StatusOr<std::optional<uint64_t>>(l.status());
    if (usage.ok() && limit.ok()) {
      r.usage = *usage;
      r.usage_from_cgroup = true;
      r.limit = *limit;
      if (r.limit) r.limit_source = cgroup_desc_;
    }
  }
  if (!r.limit && opts_.flag_limit > 0) {
    r.limit = opts_.flag_limit;
    r.limit_source = "flag";
  }
  return r;
}

}  // namespace pprof_sidecar
