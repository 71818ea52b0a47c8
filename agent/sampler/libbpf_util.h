// What the BPF loaders (agent/sampler) share: errno -> absl::Status with context, RAII owners of
// libbpf objects and file descriptors, and the libbpf log hook.
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_LIBBPF_UTIL_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_LIBBPF_UTIL_H_

#include <bpf/libbpf.h>

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar {

// Status for a failed syscall or libbpf call `what` with errno `err` (positive): PermissionDenied
// (EPERM/EACCES; " — needs <privilege_hint>" appended when the hint is not empty), NotFound
// (ENOENT/ENODEV/ESRCH), InvalidArgument (EINVAL), ResourceExhausted (ENOMEM/EMFILE/ENFILE/
// EBUSY/E2BIG), else Internal. The message is "<what>: <strerror>".
absl::Status LibbpfErrnoStatus(absl::string_view what, int err,
                               absl::string_view privilege_hint = "");

// Routes libbpf's warnings and errors to stderr prefixed "pprof-sidecar: libbpf: " (debug
// messages dropped). Idempotent and thread-safe: every loader calls it before opening.
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
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_LIBBPF_UTIL_H_
