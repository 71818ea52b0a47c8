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

// Go toolchains installed here, e.g. {"1.19", "1.21", "1.22", "1.23"} (those whose
// /usr/lib/go-<v>/bin/go exists).
std::vector<std::string> GoVersions();
// A gtest parameter name for a Go version: "1.21" -> "go1_21".
std::string GoVersionName(const std::string& version);
// Builds the Go main package in `src_dir` (GOPATH mode, no network) with Go `version` and extra
// `go build` flags (e.g. "-ldflags=-s -w", "-buildmode=pie", "-trimpath") into `out`.
absl::StatusOr<std::string> BuildGo(const std::string& version, const std::string& src_dir,
                                    const std::string& flags, const std::string& out);
// Compiles C or C++ sources (by extension) with the given flags into `out`.
absl::StatusOr<std::string> BuildNative(const std::vector<std::string>& srcs,
                                        const std::string& flags, const std::string& out);
// Path of the pprofcheck tool (tests/tools/pprofcheck), built once per test process with Debian's
// google/pprof (GOPATH /usr/share/gocode).
absl::StatusOr<std::string> PprofCheckTool();

}  // namespace pprof_sidecar::testing

#endif  // PPROF_SIDECAR_TESTS_TESTUTIL_TESTUTIL_H_
