// Reading a Go binary's machine code through its pclntab: functions by name, their bytes, and the
// direct calls they make. Used where the agent needs a fact about the runtime's code that no
// symbol table records (stripped binaries): runtime variables' addresses (agent/heap/go_heap.h)
// and the return address of runtime.cgocall's call into C (agent/unwind/unwinder.h).
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_CODE_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_CODE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_pclntab.h"

namespace pprof_sidecar {

// The named functions (exact names) found by one walk of the pclntab's function table; names not
// found are absent.
std::map<std::string, GoPclntab::FuncInfo> FindGoFuncs(const GoPclntab& pcln,
                                                       const std::vector<std::string>& names);

// Machine code of a function [entry, end) from the file image; an error if it is not in the file.
absl::StatusOr<absl::string_view> GoFunctionCode(const ElfFile& elf, const GoPclntab::FuncInfo& f);

// Return addresses of the x86-64 direct calls (E8 rel32) to `target` in `code`, which starts at
// address `code_addr`. A byte scan: an E8 inside another instruction whose displacement happens
// to reach `target` is also reported.
std::vector<uint64_t> FindDirectCallReturns(absl::string_view code, uint64_t code_addr,
                                            uint64_t target);

// Whether the 5 bytes before `ret` (link-time) in `elf` are a direct call to `target`.
bool IsDirectCallReturn(const ElfFile& elf, uint64_t ret, uint64_t target);

// runtime.cgocall and the return address of its one call to runtime.asmcgocall (link-time).
// While a goroutine runs C code, that return address is the goroutine stack's innermost frame;
// the C code runs on the thread's g0 stack.
struct GoCgoCall {
  uint64_t cgocall_entry = 0;
  uint64_t asmcgocall_return = 0;
};
// NotFound when the linker dropped runtime.cgocall (nothing calls it), or when the call is not
// exactly one direct call (a toolchain whose code differs).
absl::StatusOr<GoCgoCall> FindGoCgoCall(const ElfFile& elf, const GoPclntab& pcln);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_GO_CODE_H_
