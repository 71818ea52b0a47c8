#include "agent/oom/snapshot_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {
namespace {

constexpr char kProfileExt[] = ".pb.gz";
constexpr char kMetaExt[] = ".meta";
constexpr char kTmpPrefix[] = ".tmp-";
constexpr uint64_t kMaxProfileRead = uint64_t{1} << 30;

absl::Status ErrnoError(const std::string& what, int err) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<std::string> ReadWhole(const std::string& path, uint64_t max) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return ErrnoError(absl::StrCat("open ", path), errno);
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || out.size() > max) {
      const int err = n < 0 ? errno : EFBIG;
      close(fd);
      return ErrnoError(absl::StrCat("read ", path), err);
    }
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// A name the store made: digits, letters, '-', '.', '_' only (never a path).
bool SafeName(absl::string_view n) {
  if (n.empty() || n[0] == '.') return false;
  for (char c : n) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string FormatSnapshotMeta(const SnapshotMeta& m) {
  return absl::StrCat("name=", m.name, "\nkind=", m.kind, "\nreason=", m.reason,
                      "\ntime_unix_nanos=", absl::ToUnixNanos(m.time), "\npid=", m.pid,
                      "\nstart_time=", m.start_time, "\ncomm=", m.comm, "\nusage=", m.usage,
                      "\nrss=", m.rss, "\nlimit=", m.limit, "\nbytes=", m.bytes, "\nseq=", m.seq,
                      "\n");
}

absl::StatusOr<SnapshotMeta> ParseSnapshotMeta(const std::string& text) {
  SnapshotMeta m;
  std::map<std::string, std::string> kv;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(line, absl::MaxSplits('=', 1));
    kv[p.first] = p.second;
  }
  int64_t nanos = 0;
  int pid = 0;
  bool ok = absl::SimpleAtoi(kv["time_unix_nanos"], &nanos) && absl::SimpleAtoi(kv["pid"], &pid) &&
            absl::SimpleAtoi(kv["start_time"], &m.start_time) &&
            absl::SimpleAtoi(kv["usage"], &m.usage) && absl::SimpleAtoi(kv["rss"], &m.rss) &&
            absl::SimpleAtoi(kv["limit"], &m.limit) && absl::SimpleAtoi(kv["bytes"], &m.bytes) &&
            absl::SimpleAtoi(kv["seq"], &m.seq) && SafeName(kv["name"]);
  if (!ok) return absl::DataLossError("snapshot metadata is incomplete or malformed");
  m.name = kv["name"];
  m.kind = kv["kind"];
  m.reason = kv["reason"];
  m.comm = kv["comm"];
  m.time = absl::FromUnixNanos(nanos);
  m.pid = pid;
  return m;
}

absl::StatusOr<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(SnapshotStoreOptions opts) {
  if (opts.dir.empty()) return absl::InvalidArgumentError("no snapshot directory");
  if (mkdir(opts.dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return ErrnoError(absl::StrCat("mkdir ", opts.dir), errno);
  }
  std::unique_ptr<SnapshotStore> s(new SnapshotStore(std::move(opts)));
  absl::Status st = s->Load();
  if (!st.ok()) return st;
  return s;
}

absl::Status SnapshotStore::Load() {
  DIR* d = opendir(opts_.dir.c_str());
  if (d == nullptr) return ErrnoError(absl::StrCat("opendir ", opts_.dir), errno);
  std::set<std::string> profiles, metas, junk;
  while (struct dirent* e = readdir(d)) {
    absl::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    if (absl::StartsWith(n, kTmpPrefix)) {
      junk.insert(std::string(n));
    } else if (absl::ConsumeSuffix(&n, kProfileExt)) {
      profiles.insert(std::string(n));
    } else if (absl::ConsumeSuffix(&n, kMetaExt)) {
      metas.insert(std::string(n));
    }
  }
  closedir(d);
  for (const std::string& name : metas) {
    absl::StatusOr<std::string> text =
        ReadWhole(absl::StrCat(opts_.dir, "/", name, kMetaExt), 1 << 16);
    absl::StatusOr<SnapshotMeta> m =
        text.ok() ? ParseSnapshotMeta(*text) : absl::StatusOr<SnapshotMeta>(text.status());
    if (!m.ok() || m->name != name || !profiles.count(name)) {
      junk.insert(absl::StrCat(name, kMetaExt));
      continue;
    }
    by_seq_[m->seq] = *m;
    bytes_ += m->bytes;
    next_seq_ = std::max(next_seq_, m->seq + 1);
  }
  for (const std::string& name : profiles) {
    bool indexed = false;
    for (const auto& [seq, m] : by_seq_) indexed = indexed || m.name == name;
    if (!indexed) junk.insert(absl::StrCat(name, kProfileExt));
  }
  for (const std::string& j : junk) {
    if (unlink(absl::StrCat(opts_.dir, "/", j).c_str()) == 0) ++stats_.cleaned_at_start;
  }
  return absl::OkStatus();
}

absl::Status SnapshotStore::WriteFileAtomically(const std::string& file, const std::string& data) {
  const std::string tmp = absl::StrCat(opts_.dir, "/", kTmpPrefix, file);
  const std::string dst = absl::StrCat(opts_.dir, "/", file);
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
  if (fd < 0) return ErrnoError(absl::StrCat("create ", tmp), errno);
  size_t off = 0;
  int err = 0;
  while (off < data.size() && err == 0) {
    const ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno != EINTR) err = errno;
    if (n > 0) off += static_cast<size_t>(n);
  }
  if (err == 0 && fsync(fd) != 0) err = errno;
  if (close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && rename(tmp.c_str(), dst.c_str()) != 0) err = errno;
  if (err != 0) {
    unlink(tmp.c_str());
    return ErrnoError(absl::StrCat("write ", tmp), err);
  }
  return absl::OkStatus();
}

void SnapshotStore::Evict(uint64_t incoming_bytes) {
  while (!by_seq_.empty() &&
         (by_seq_.size() + 1 > opts_.max_count || bytes_ + incoming_bytes > opts_.max_bytes)) {
    const SnapshotMeta& old = by_seq_.begin()->second;
    // Metadata first: a crash in between leaves an unlisted profile, cleaned at the next Open.
    unlink(absl::StrCat(opts_.dir, "/", old.name, kMetaExt).c_str());
    unlink(absl::StrCat(opts_.dir, "/", old.name, kProfileExt).c_str());
    bytes_ -= old.bytes;
    by_seq_.erase(by_seq_.begin());
    ++stats_.evicted;
  }
}

absl::StatusOr<SnapshotMeta> SnapshotStore::Write(SnapshotMeta meta, const std::string& profile) {
  std::lock_guard<std::mutex> l(mu_);
  absl::Status st;
  if (profile.size() > opts_.max_bytes) {
    st = absl::ResourceExhaustedError(absl::StrCat("snapshot of ", profile.size(),
                                                   " bytes exceeds --snapshot_max_bytes (",
                                                   opts_.max_bytes, ")"));
  } else {
    Evict(profile.size());
    meta.seq = next_seq_++;
    meta.bytes = profile.size();
    meta.name = absl::StrFormat("%06d-%s-pid%d-%s-%s", meta.seq,
                                absl::FormatTime("%Y%m%dT%H%M%SZ", meta.time, absl::UTCTimeZone()),
                                meta.pid, meta.reason, meta.kind);
    st = WriteFileAtomically(meta.name + kProfileExt, profile);
    if (st.ok()) st = WriteFileAtomically(meta.name + kMetaExt, FormatSnapshotMeta(meta));
    if (st.ok()) {
      // The directory entries themselves (best effort: some filesystems refuse fsync on dirs).
      const int dfd = open(opts_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
      }
    } else {
      unlink(absl::StrCat(opts_.dir, "/", meta.name, kProfileExt).c_str());
    }
  }
  if (!st.ok()) {
    ++stats_.write_failures;
    last_error_ =
        absl::Status(st.code(), absl::StrCat("snapshot directory ", opts_.dir, ": ", st.message()));
    return last_error_;
  }
  last_error_ = absl::OkStatus();
  by_seq_[meta.seq] = meta;
  bytes_ += meta.bytes;
  ++stats_.written_by_reason[meta.reason];
  return meta;
}

std::vector<SnapshotMeta> SnapshotStore::List() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<SnapshotMeta> out;
  for (const auto& [seq, m] : by_seq_) out.push_back(m);
  return out;
}

absl::StatusOr<std::string> SnapshotStore::Read(const std::string& name) const {
  {
    std::lock_guard<std::mutex> l(mu_);
    bool found = false;
    for (const auto& [seq, m] : by_seq_) found = found || m.name == name;
    if (!found) return absl::NotFoundError(absl::StrCat("no snapshot named \"", name, "\""));
  }
  // Evicted meanwhile: NotFound from the open.
  return ReadWhole(absl::StrCat(opts_.dir, "/", name, kProfileExt), kMaxProfileRead);
}

absl::Status SnapshotStore::health() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_error_;
}

SnapshotStoreStats SnapshotStore::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  SnapshotStoreStats s = stats_;
  s.kept = by_seq_.size();
  s.kept_bytes = bytes_;
  return s;
}

}  // namespace pprof_sidecar
