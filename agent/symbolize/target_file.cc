#include "agent/symbolize/target_file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pprof_sidecar {
namespace {

// Most symlinks followed while resolving one path (the kernel's MAXSYMLINKS).
constexpr int kMaxSymlinks = 40;

std::atomic<bool> g_use_openat2{true};

// "what: strerror(err)", with the status code of err.
absl::Status ErrnoError(int err, const std::string& what) { return absl::ErrnoToStatus(err, what); }

class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  ScopedFd(ScopedFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  ScopedFd& operator=(ScopedFd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

// From an O_PATH descriptor of `what`: refuses anything but a regular file of at most max_bytes,
// then opens that very inode for reading without blocking.
absl::StatusOr<TargetFd> ReopenRegular(ScopedFd opath, const std::string& what,
                                       uint64_t max_bytes) {
  struct stat st;
  if (fstat(opath.get(), &st) != 0) return ErrnoError(errno, absl::StrCat("fstat ", what));
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISDIR(st.st_mode)  ? "a directory"
                       : S_ISLNK(st.st_mode)  ? "a symlink"
                                              : "not a regular file";
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": not a regular file (", kind, "): not opened"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": ", st.st_size, " bytes, larger than the limit of ", max_bytes, ": not read"));
  }
  // O_NONBLOCK: a write lease the target holds makes this fail instead of waiting (up to
  // /proc/sys/fs/lease-break-time) for the lease to be broken.
  const std::string self = absl::StrCat("/proc/self/fd/", opath.get());
  ScopedFd fd(open(self.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) {
    int err = errno;
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": held under a lease by another process: not opened"));
    }
    return ErrnoError(err, absl::StrCat("open ", what));
  }
  struct stat st2;
  if (fstat(fd.get(), &st2) != 0) return ErrnoError(errno, absl::StrCat("fstat ", what));
  if (st2.st_dev != st.st_dev || st2.st_ino != st.st_ino || !S_ISREG(st2.st_mode)) {
    return absl::UnavailableError(absl::StrCat(what, ": changed while being opened"));
  }
  return TargetFd(fd.release(), static_cast<uint64_t>(st2.st_size), st2.st_dev, st2.st_ino);
}

// openat2(RESOLVE_IN_ROOT): -1 with errno set on failure (ENOSYS: not supported).
int OpenInRootOpenat2(int root_fd, const std::string& rel) {
  struct open_how how;
  memset(&how, 0, sizeof(how));
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0; attempt < 8; ++attempt) {
    long fd = syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof(how));
    if (fd >= 0) return static_cast<int>(fd);
    // EAGAIN: a concurrent rename made ".." resolution unsafe; the kernel asks for a retry.
    if (errno != EAGAIN && errno != EINTR) return -1;
  }
  errno = EAGAIN;
  return -1;
}

// The same resolution done in user space: every component is opened with O_PATH | O_NOFOLLOW
// relative to the directory before it; symlinks are read and their targets resolved the same
// way, an absolute one from `root_fd`; ".." never goes above root_fd. Returns an O_PATH fd of
// the final component (following a final symlink), or -1 with errno set.
int OpenInRootWalk(int root_fd, const std::string& rel) {
  std::vector<ScopedFd> dirs;  // dirs.back() is the current directory; dirs[0] the root
  dirs.emplace_back(fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (dirs[0].get() < 0) return -1;
  std::deque<std::string> todo;
  for (absl::string_view c : absl::StrSplit(rel, '/', absl::SkipEmpty())) todo.emplace_back(c);
  int links = 0;
  ScopedFd last;  // the final component, once reached
  while (!todo.empty()) {
    const std::string c = std::move(todo.front());
    todo.pop_front();
    if (c == ".") {
      if (todo.empty()) last = ScopedFd(fcntl(dirs.back().get(), F_DUPFD_CLOEXEC, 0));
      continue;
    }
    if (c == "..") {
      if (dirs.size() > 1) dirs.pop_back();
      if (todo.empty()) last = ScopedFd(fcntl(dirs.back().get(), F_DUPFD_CLOEXEC, 0));
      continue;
    }
    ScopedFd fd(openat(dirs.back().get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) return -1;
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return -1;
    if (S_ISLNK(st.st_mode)) {
      if (++links > kMaxSymlinks) {
        errno = ELOOP;
        return -1;
      }
      char buf[4096];
      ssize_t n = readlinkat(fd.get(), "", buf, sizeof(buf));
      if (n < 0) return -1;
      if (n == 0 || n == static_cast<ssize_t>(sizeof(buf))) {
        errno = ENAMETOOLONG;
        return -1;
      }
      const std::string target(buf, static_cast<size_t>(n));
      if (target[0] == '/') dirs.resize(1);
      std::vector<std::string> parts = absl::StrSplit(target, '/', absl::SkipEmpty());
      todo.insert(todo.begin(), parts.begin(), parts.end());
      if (parts.empty()) {  // "/" itself
        if (todo.empty()) last = ScopedFd(fcntl(dirs.back().get(), F_DUPFD_CLOEXEC, 0));
      }
      continue;
    }
    if (todo.empty()) {
      last = std::move(fd);
      break;
    }
    if (!S_ISDIR(st.st_mode)) {
      errno = ENOTDIR;
      return -1;
    }
    dirs.push_back(std::move(fd));
  }
  if (last.get() < 0) {
    if (rel.find_first_not_of('/') == std::string::npos) {
      return fcntl(dirs[0].get(), F_DUPFD_CLOEXEC, 0);  // the root itself
    }
    if (errno == 0) errno = ENOENT;
    return -1;
  }
  return last.release();
}

}  // namespace

TargetFd& TargetFd::operator=(TargetFd&& o) noexcept {
  if (this != &o) {
    Reset();
    fd_ = o.fd_;
    size_ = o.size_;
    dev_ = o.dev_;
    ino_ = o.ino_;
    o.fd_ = -1;
  }
  return *this;
}

int TargetFd::release() {
  int f = fd_;
  fd_ = -1;
  return f;
}

void TargetFd::Reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

std::string TargetFd::ProcPath() const { return absl::StrCat("/proc/self/fd/", fd_); }

absl::StatusOr<TargetFd> OpenRegularFile(const std::string& path, uint64_t max_bytes) {
  ScopedFd opath(open(path.c_str(), O_PATH | O_CLOEXEC));
  if (opath.get() < 0) return ErrnoError(errno, absl::StrCat("open ", path));
  return ReopenRegular(std::move(opath), path, max_bytes);
}

absl::StatusOr<TargetFd> OpenRegularFileInRoot(const std::string& root, const std::string& path,
                                               uint64_t max_bytes) {
  const std::string root_dir = root.empty() ? "/" : root;
  const std::string shown =
      root.empty() ? path : absl::StrCat(root, path.empty() || path[0] != '/' ? "/" : "", path);
  ScopedFd root_fd(open(root_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (root_fd.get() < 0) return ErrnoError(errno, absl::StrCat("open ", root_dir));
  int fd = -1;
  errno = 0;
  if (g_use_openat2.load(std::memory_order_relaxed)) {
    fd = OpenInRootOpenat2(root_fd.get(), path);
    if (fd < 0 && errno == ENOSYS) {
      g_use_openat2.store(false);  // an older kernel: walk from now on
    }
  }
  if (fd < 0 && !g_use_openat2.load(std::memory_order_relaxed)) {
    errno = 0;
    fd = OpenInRootWalk(root_fd.get(), path);
  }
  if (fd < 0) return ErrnoError(errno, absl::StrCat("open ", shown, " (inside ", root_dir, ")"));
  return ReopenRegular(ScopedFd(fd), shown, max_bytes);
}

void UseOpenat2ForTesting(bool use) { g_use_openat2.store(use); }

}  // namespace pprof_sidecar
