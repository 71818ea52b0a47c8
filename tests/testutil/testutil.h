// Helpers for tests that build real target programs from source and run real tools.
#ifndef PPROF_SIDECAR_TESTS_TESTUTIL_TESTUTIL_H_
#define PPROF_SIDECAR_TESTS_TESTUTIL_TESTUTIL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pprof_sidecar::testing {

// Root of tests/ in the source tree (targets/, tools/).
std::string TestDataDir();
// A fresh directory under $TMPDIR (or /tmp), removed by nobody: tests are hermetic per run.
std::string MakeTempDir(const std::string& prefix);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr interleaved
};
// Runs `/bin/sh -c cmd`, capturing output.
CommandResult RunCommand(const std::string& cmd);

// The Go version matrix every Go test covers, oldest first: each minor release from 1.19 to the
// newest stable. Toolchains are installed by scripts/install-deps.sh (Debian packages, Go module
// proxy toolchains) under GoMatrixDir(); a test whose toolchain is missing fails saying so.
std::vector<std::string> GoVersions();
// The oldest and the newest of the matrix (for the heavier tests).
std::vector<std::string> OldestAndNewestGo();
// Where the matrix lives: $PPROF_SIDECAR_GO_MATRIX, else /opt/pprof-sidecar/go (one GOROOT per
// minor version, e.g. /opt/pprof-sidecar/go/1.24/bin/go).
std::string GoMatrixDir();
// The `go` command of a matrix version; an error naming the fix if it is not installed.
absl::StatusOr<std::string> GoTool(const std::string& version);
// The Go build cache the tests share per version (`go tool pprof` of Go 1.24+ is built on first
// use and cached there too).
std::string GoCacheDir(const std::string& version);
// A gtest parameter name for a Go version: "1.21" -> "go1_21".
std::string GoVersionName(const std::string& version);
// `go build` flags of the production build the matrix covers besides the plain one: stripped,
// position independent, no local paths.
inline constexpr char kGoStrippedPie[] = "-ldflags='-s -w' -buildmode=pie -trimpath";
// Builds the Go main package in `src_dir` (GOPATH mode, no network) with Go `version` and extra
// `go build` flags (e.g. kGoStrippedPie) into `out`. Each (version, source, flags) is built once
// per test process and copied to later `out`s.
absl::StatusOr<std::string> BuildGo(const std::string& version, const std::string& src_dir,
                                    const std::string& flags, const std::string& out);
// Builds the Go module in `src_dir` (its go.mod and go.sum; nothing vendored) with Go `version`,
// fetching its dependencies through the Go module proxy ($GOPROXY, else Go's default) into the
// matrix's module cache. The error says when modules could not be fetched.
absl::StatusOr<std::string> BuildGoModule(const std::string& version, const std::string& src_dir,
                                          const std::string& flags, const std::string& out);
// Compiles C or C++ sources (by extension) with the given flags into `out`.
absl::StatusOr<std::string> BuildNative(const std::vector<std::string>& srcs,
                                        const std::string& flags, const std::string& out);
// Path of the pprofcheck tool (tests/tools/pprofcheck), built once per test process with Debian's
// google/pprof (GOPATH /usr/share/gocode).
absl::StatusOr<std::string> PprofCheckTool();

}  // namespace pprof_sidecar::testing

#endif  // PPROF_SIDECAR_TESTS_TESTUTIL_TESTUTIL_H_
