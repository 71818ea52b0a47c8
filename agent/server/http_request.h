// HTTP/1.1 request parsing (RFC 9112) for the agent's own server: incremental, bounded and pure
// (no I/O), so it is unit-tested and fuzzed (http_request_fuzzer.cc) without sockets.
//
// Bounds, each answered with its own status: request line (414), request line plus headers
// (431), number of header fields (431), body (413, decided from Content-Length before any body
// byte is read, or while a chunked body arrives). Other malformed input is a 400, an HTTP
// version other than 1.0/1.1 a 505, a transfer coding other than chunked a 501.
#ifndef PPROF_SIDECAR_AGENT_SERVER_HTTP_REQUEST_H_
#define PPROF_SIDECAR_AGENT_SERVER_HTTP_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar {

struct HttpLimits {
  size_t max_request_line = 8 << 10;   // method, target and version
  size_t max_header_bytes = 32 << 10;  // request line and all header fields
  size_t max_headers = 100;            // header fields
  size_t max_body_bytes = 1 << 20;     // decoded body (a /debug/pprof/symbol POST)
};

struct HttpRequest {
  std::string method;                                        // as sent (methods are case-sensitive)
  std::string target;                                        // as sent: origin-form path and query
  std::string path;                                          // percent-decoded path of the target
  std::string query;                                         // raw query (after '?'), not decoded
  int minor_version = 1;                                     // HTTP/1.<minor>
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, in order
  std::string body;
  bool keep_alive = true;        // HTTP/1.1 unless "Connection: close"; 1.0 only if asked
  bool expect_continue = false;  // "Expect: 100-continue" (HTTP/1.1)

  // The first value of header `lower_name`, or nullptr.
  const std::string* Header(absl::string_view lower_name) const;
};

// Query parameters as Go's url.ParseQuery reads them: '&'-separated, key=value (value "" when
// there is no '='), '+' is a space, %XX escapes. InvalidArgument on a bad escape.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(
    absl::string_view query);

// Percent-decodes `s` ('+' stays '+'); false on a bad escape.
bool PercentDecode(absl::string_view s, std::string* out);

class HttpRequestParser {
 public:
  enum class State {
    kNeedMore,  // consumed what it could; feed more bytes
    kComplete,  // request() holds a whole request
    kError,     // error_status()/error_message(); the connection must be closed after answering
  };

  explicit HttpRequestParser(HttpLimits limits) : limits_(limits) {}

  // Parses from the start of `in`, which holds the bytes not consumed yet; sets *consumed to the
  // number of bytes used. After kComplete, call Reset() before the next request (pipelined bytes
  // stay unconsumed in `in`).
  State Feed(absl::string_view in, size_t* consumed);
  // True once the request line and headers are parsed (the body may still be coming).
  bool head_done() const { return phase_ > Phase::kHead; }
  // True if a request's first byte has been seen (so a timeout is a 408, not an idle close).
  bool started() const { return started_; }

  const HttpRequest& request() const { return req_; }
  HttpRequest TakeRequest() { return std::move(req_); }
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }
  void Reset();

 private:
  enum class Phase { kHead, kBody, kChunkSize, kChunkData, kChunkEnd, kTrailers, kDone, kError };
  State Fail(int status, std::string message);
  State ParseRequestLine(absl::string_view line);
  State ParseHead(absl::string_view head);
  State ParseHeaderLine(absl::string_view line);
  State StartBody();
  // Each phase's step over in[*pos...]: advances *pos (and the phase); a state to return to the
  // caller, or nothing to go on with the next phase.
  std::optional<State> StepHead(absl::string_view in, size_t* pos);
  std::optional<State> StepData(absl::string_view in, size_t* pos);  // kBody, kChunkData
  std::optional<State> StepChunkEnd(absl::string_view in, size_t* pos);
  std::optional<State> StepChunkSize(absl::string_view in, size_t* pos);
  std::optional<State> StepTrailers(absl::string_view in, size_t* pos);
  // The end of the head (just past its empty line; npos: not yet), searched from scanned_; notes
  // where the request line ends.
  size_t ScanHead(absl::string_view head);
  // Refuses a request line too long, garbage as soon as it cannot be a method (a TLS hello) and a
  // bad request line as soon as it ends, without waiting for the rest of the head.
  std::optional<State> CheckRequestLine(absl::string_view head);

  const HttpLimits limits_;
  Phase phase_ = Phase::kHead;
  bool started_ = false;
  size_t scanned_ = 0;  // bytes of the head already searched for its end
  size_t first_line_end_ = absl::string_view::npos;
  bool request_line_done_ = false;
  HttpRequest req_;
  uint64_t remaining_ = 0;  // body or chunk bytes still to read
  size_t trailer_bytes_ = 0;
  int error_status_ = 0;
  std::string error_message_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SERVER_HTTP_REQUEST_H_
