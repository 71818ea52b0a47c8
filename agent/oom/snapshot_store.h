// The snapshot directory (--snapshot_dir): pprof files of the target's heap (and goroutines)
// with their metadata, kept across the target's restarts and the agent's own (an emptyDir in the
// chart).
//
// Each snapshot is two files, <name>.pb.gz (the profile as served) and <name>.meta (key=value
// lines), each written to a ".tmp-" file, fsync'ed and renamed into place, then the directory is
// fsync'ed: a reader never sees half a file. A snapshot exists once its .meta does (written
// second). Open() deletes leftovers of an interrupted write (".tmp-" files, a profile without
// metadata and vice versa), so they are never served. The directory is a ring: before a write,
// the oldest snapshots are deleted until the new one fits both `max_count` and `max_bytes`.
// Write errors (full disk, read-only directory) are returned and remembered for /healthz; they
// never stop the agent. Thread-safe.
#ifndef PPROF_SIDECAR_AGENT_OOM_SNAPSHOT_STORE_H_
#define PPROF_SIDECAR_AGENT_OOM_SNAPSHOT_STORE_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pprof_sidecar {

struct SnapshotMeta {
  std::string name;    // set by Write: "<seq>-<time>-pid<pid>-<reason>-<kind>"
  std::string kind;    // "heap", "goroutine"
  std::string reason;  // "50pct" ... "95pct", "interval", "oom-kill"
  absl::Time time;
  pid_t pid = 0;
  uint64_t start_time = 0;  // the process's start (clock ticks since boot, /proc/PID/stat)
  std::string comm;
  uint64_t usage = 0, rss = 0;
  uint64_t limit = 0;  // 0: none known
  uint64_t bytes = 0;  // of the profile (set by Write)
  uint64_t seq = 0;    // set by Write
};

struct SnapshotStoreOptions {
  std::string dir;
  size_t max_count = 32;
  uint64_t max_bytes = 32 << 20;
};

struct SnapshotStoreStats {
  std::map<std::string, uint64_t> written_by_reason;
  uint64_t write_failures = 0;
  uint64_t evicted = 0;
  uint64_t cleaned_at_start = 0;  // leftover partial files deleted by Open
  uint64_t kept = 0, kept_bytes = 0;
};

class SnapshotStore {
 public:
  // Creates the directory if needed, cleans leftovers and indexes what is there. An unwritable
  // directory is not an error here (Write fails and says so); an unreadable one is.
  static absl::StatusOr<std::unique_ptr<SnapshotStore>> Open(SnapshotStoreOptions opts);

  // Writes `profile` with `meta` (name, seq, bytes filled in), evicting the oldest as needed.
  // Returns the stored metadata.
  absl::StatusOr<SnapshotMeta> Write(SnapshotMeta meta, const std::string& profile);
  // Oldest first.
  std::vector<SnapshotMeta> List() const;
  // The profile of snapshot `name`. NotFound if there is none.
  absl::StatusOr<std::string> Read(const std::string& name) const;
  // OK, or the last write error (cleared by the next successful write).
  absl::Status health() const;
  SnapshotStoreStats stats() const;
  const std::string& dir() const { return opts_.dir; }

 private:
  explicit SnapshotStore(SnapshotStoreOptions opts) : opts_(std::move(opts)) {}
  absl::Status Load();
  absl::Status WriteFileAtomically(const std::string& file, const std::string& data);
  void Evict(uint64_t incoming_bytes);

  const SnapshotStoreOptions opts_;
  mutable std::mutex mu_;
  std::map<uint64_t, SnapshotMeta> by_seq_;
  uint64_t next_seq_ = 1;
  uint64_t bytes_ = 0;
  absl::Status last_error_;
  SnapshotStoreStats stats_;
};

// Metadata file format (key=value lines), exposed for tests.
std::string FormatSnapshotMeta(const SnapshotMeta& m);
absl::StatusOr<SnapshotMeta> ParseSnapshotMeta(const std::string& text);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_OOM_SNAPSHOT_STORE_H_
