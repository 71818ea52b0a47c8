// Types shared by every symbolizer (ELF symbol tables, Go pclntab, kernel kallsyms).
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_SOURCE_LINE_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_SOURCE_LINE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace pprof_sidecar {

// One source position of a program counter. For an inlined call chain a PC resolves to several
// SourceLines; they are ordered innermost (the inlined callee that actually executes) first and
// the physical function last, exactly like pprof's Location.line.
struct SourceLine {
  std::string function;     // display name: Go "pkg.Func", demangled C++, or the plain symbol
  std::string system_name;  // raw symbol name (mangled for C++); equals function when not mangled
  std::string file;         // source file as recorded in the binary ("" if unknown)
  int64_t line = 0;         // 1-based line, 0 if unknown
  int64_t start_line = 0;   // first line of the function, 0 if unknown
  // A Go compiler-generated wrapper (FuncIDWrapper: ABI and method wrappers, -fm closures).
  // Go's tracebacks, and so runtime/pprof, leave these frames out of callers' stacks.
  bool go_wrapper = false;
  bool operator==(const SourceLine& o) const {
    return function == o.function && system_name == o.system_name && file == o.file &&
           line == o.line && start_line == o.start_line && go_wrapper == o.go_wrapper;
  }
};

using SourceLines = std::vector<SourceLine>;

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_SOURCE_LINE_H_
