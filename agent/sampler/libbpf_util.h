// What the BPF loaders (agent/sampler) share: errno -> absl::Status with context, the agent's pid
// namespace, opening a skeleton behind the libbpf log hook, RAII owners of libbpf objects and
// file descriptors, per-CPU map reads.
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_LIBBPF_UTIL_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_LIBBPF_UTIL_H_

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar {

// Status for a failed syscall or libbpf call `what` with errno `err` (positive): PermissionDenied
// (EPERM/EACCES; " — needs <privilege_hint>" appended when the hint is not empty), NotFound
// (ENOENT/ENODEV/ESRCH), InvalidArgument (EINVAL), ResourceExhausted (ENOMEM/EMFILE/ENFILE/
// EBUSY/E2BIG), else Internal. The message is "<what>: <strerror>".
absl::Status ErrnoStatus(absl::string_view what, int err, absl::string_view privilege_hint = "");

// The agent's own pid namespace: device and inode of /proc/self/ns/pid, the pair
// bpf_get_ns_current_pid_tgid translates pids into (the inode alone is the namespace's inum).
struct PidNamespaceId {
  uint64_t dev = 0;
  uint64_t ino = 0;
};
absl::StatusOr<PidNamespaceId> AgentPidNamespace();

// Routes libbpf's warnings and errors to stderr prefixed "pprof-sidecar: libbpf: " (debug
// messages dropped). Idempotent and thread-safe; OpenSkeleton installs it.
void InstallLibbpfLogHook();

struct BpfLinkDeleter {
  void operator()(bpf_link* l) const { bpf_link__destroy(l); }
};
using BpfLinkPtr = std::unique_ptr<bpf_link, BpfLinkDeleter>;

struct RingBufferDeleter {
  void operator()(ring_buffer* rb) const { ring_buffer__free(rb); }
};
using RingBufferPtr = std::unique_ptr<ring_buffer, RingBufferDeleter>;

// A BPF skeleton owned with its generated destroy function, e.g.
// SkeletonPtr<heap_sampler_bpf, heap_sampler_bpf__destroy>.
template <typename Skel, void (*Destroy)(Skel*)>
struct SkeletonDeleter {
  void operator()(Skel* s) const { Destroy(s); }
};
template <typename Skel, void (*Destroy)(Skel*)>
using SkeletonPtr = std::unique_ptr<Skel, SkeletonDeleter<Skel, Destroy>>;

// Opens a skeleton with `open` (its generated __open, or a loader's own opener returning null
// with errno set) once libbpf logs through InstallLibbpfLogHook. Error: ErrnoStatus("opening
// <what>").
template <typename Skel, void (*Destroy)(Skel*), typename Open>
absl::StatusOr<SkeletonPtr<Skel, Destroy>> OpenSkeleton(Open open, absl::string_view what) {
  InstallLibbpfLogHook();
  SkeletonPtr<Skel, Destroy> skel(open());
  if (skel == nullptr) return ErrnoStatus(absl::StrCat("opening ", what), errno);
  return skel;
}

// Every CPU's value of the 8-byte-aligned per-CPU map `map` at `key` (one per possible CPU), each
// read as its first sizeof(T) bytes; empty when the lookup fails.
template <typename T>
std::vector<T> PerCpuValues(const bpf_map* map, uint32_t key) {
  const int ncpus = libbpf_num_possible_cpus();
  const size_t stride = (bpf_map__value_size(map) + 7) / 8 * 8;
  if (ncpus <= 0 || stride < sizeof(T)) return {};
  std::vector<uint8_t> raw(stride * static_cast<size_t>(ncpus));
  if (bpf_map_lookup_elem(bpf_map__fd(map), &key, raw.data()) != 0) return {};
  std::vector<T> out(static_cast<size_t>(ncpus));
  for (size_t cpu = 0; cpu < out.size(); ++cpu) {
    memcpy(&out[cpu], raw.data() + stride * cpu, sizeof(T));
  }
  return out;
}

// The sums over CPUs of the u64 per-CPU array `map` at keys 0..n-1 (0 where a lookup fails).
std::vector<uint64_t> PerCpuSums(const bpf_map* map, uint32_t n);

// An owned file descriptor (e.g. a BPF link created with BPF_LINK_CREATE directly); closed on
// destruction. -1: none.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd();
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_LIBBPF_UTIL_H_
