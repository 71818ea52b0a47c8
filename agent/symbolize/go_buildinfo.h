// The Go release a binary was built with, from its build info blob (the `.go.buildinfo` section,
// present in stripped binaries: `go version FILE` reads the same). Go 1.18+ write the version
// string inline (varint length + bytes) after a 32-byte header starting "\xff Go buildinf:".
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_BUILDINFO_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_BUILDINFO_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/elf_file.h"

namespace pprof_sidecar {

// "go1.26.11", "go1.27rc1", "devel go1.28-abcdef ..." as the toolchain recorded it. NotFound if
// the binary has no build info (not Go, or a pre-1.18 layout with pointers instead of inline
// strings).
absl::StatusOr<std::string> GoBuildVersion(const ElfFile& elf);

// A parsed release: go1.MINOR[.PATCH] (rc/beta count as the release they precede).
struct GoRelease {
  int major = 0, minor = 0, patch = 0;
};
// nullopt when `version` does not name a go1.N release.
std::optional<GoRelease> ParseGoRelease(absl::string_view version);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_BUILDINFO_H_
