#include "agent/server/http_request.h"

#include <algorithm>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {
namespace {

constexpr size_t kMaxChunkSizeLine = 1024;

// RFC 9110 tchar.
bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool ParseDecimal(absl::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

const std::string* HttpRequest::Header(absl::string_view lower_name) const {
  for (const auto& [k, v] : headers) {
    if (k == lower_name) return &v;
  }
  return nullptr;
}

bool PercentDecode(absl::string_view s, std::string* out) {
  out->clear();
  out->reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out->push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return false;
    const int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(
    absl::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  for (absl::string_view part : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    if (absl::StrContains(part, ';')) {
      return absl::InvalidArgumentError("invalid semicolon separator in query");
    }
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(part, absl::MaxSplits('=', 1));
    std::string k(kv.first), v(kv.second);
    for (char& c : k) c = c == '+' ? ' ' : c;
    for (char& c : v) c = c == '+' ? ' ' : c;
    std::string dk, dv;
    if (!PercentDecode(k, &dk) || !PercentDecode(v, &dv)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid URL escape in query \"", part, "\""));
    }
    out.emplace_back(std::move(dk), std::move(dv));
  }
  return out;
}

void HttpRequestParser::Reset() {
  phase_ = Phase::kHead;
  started_ = false;
  scanned_ = 0;
  first_line_end_ = absl::string_view::npos;
  request_line_done_ = false;
  req_ = HttpRequest();
  remaining_ = 0;
  trailer_bytes_ = 0;
  error_status_ = 0;
  error_message_.clear();
}

HttpRequestParser::State HttpRequestParser::Fail(int status, std::string message) {
  phase_ = Phase::kError;
  error_status_ = status;
  error_message_ = std::move(message);
  return State::kError;
}

HttpRequestParser::State HttpRequestParser::Feed(absl::string_view in, size_t* consumed) {
  size_t pos = 0;
  while (true) {
    std::optional<State> stop;
    switch (phase_) {
      case Phase::kHead:
        stop = StepHead(in, &pos);
        break;
      case Phase::kBody:
      case Phase::kChunkData:
        stop = StepData(in, &pos);
        break;
      case Phase::kChunkEnd:
        stop = StepChunkEnd(in, &pos);
        break;
      case Phase::kChunkSize:
        stop = StepChunkSize(in, &pos);
        break;
      case Phase::kTrailers:
        stop = StepTrailers(in, &pos);
        break;
      case Phase::kDone:
        stop = State::kComplete;
        break;
      case Phase::kError:
        stop = State::kError;
        break;
    }
    if (stop) {
      *consumed = pos;
      return *stop;
    }
  }
}

size_t HttpRequestParser::ScanHead(absl::string_view head) {
  for (size_t i = scanned_; i < head.size(); ++i) {
    if (head[i] != '\n') continue;
    if (first_line_end_ == absl::string_view::npos) first_line_end_ = i;
    if ((i >= 1 && head[i - 1] == '\n') || (i >= 2 && head[i - 1] == '\r' && head[i - 2] == '\n')) {
      return i + 1;
    }
  }
  return absl::string_view::npos;
}

std::optional<HttpRequestParser::State> HttpRequestParser::CheckRequestLine(
    absl::string_view head) {
  if (first_line_end_ == absl::string_view::npos ? head.size() > limits_.max_request_line
                                                 : first_line_end_ > limits_.max_request_line) {
    return Fail(414, "request line too long");
  }
  if (first_line_end_ == absl::string_view::npos) {
    const size_t sp = head.find(' ');
    if (!IsToken(head.substr(0, std::min(sp, head.size())))) return Fail(400, "malformed method");
  } else if (!request_line_done_) {
    request_line_done_ = true;
    if (ParseRequestLine(absl::StripSuffix(head.substr(0, first_line_end_), "\r")) ==
        State::kError) {
      return State::kError;
    }
  }
  return std::nullopt;
}

std::optional<HttpRequestParser::State> HttpRequestParser::StepHead(absl::string_view in,
                                                                    size_t* pos) {
  if (!started_) {
    // Empty lines before a request line are ignored (RFC 9112 2.2).
    while (*pos < in.size() && (in[*pos] == '\r' || in[*pos] == '\n')) ++*pos;
    if (*pos == in.size()) return State::kNeedMore;
    started_ = true;
  }
  const absl::string_view head = in.substr(*pos);
  const size_t end = ScanHead(head);
  if (std::optional<State> bad = CheckRequestLine(head)) return bad;
  if (end == absl::string_view::npos) {
    scanned_ = head.size();
    if (head.size() > limits_.max_header_bytes) {
      return Fail(431, "request header fields too large");
    }
    return State::kNeedMore;
  }
  if (end > limits_.max_header_bytes) return Fail(431, "request header fields too large");
  if (ParseHead(head.substr(0, end)) == State::kError) return State::kError;
  *pos += end;
  if (StartBody() == State::kError) return State::kError;
  return std::nullopt;
}

std::optional<HttpRequestParser::State> HttpRequestParser::StepData(absl::string_view in,
                                                                    size_t* pos) {
  const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - *pos));
  req_.body.append(in.data() + *pos, n);
  *pos += n;
  remaining_ -= n;
  if (remaining_ > 0) return State::kNeedMore;
  phase_ = phase_ == Phase::kBody ? Phase::kDone : Phase::kChunkEnd;
  return std::nullopt;
}

std::optional<HttpRequestParser::State> HttpRequestParser::StepChunkEnd(absl::string_view in,
                                                                        size_t* pos) {
  const size_t p = *pos;
  if (in.size() - p < 1 || (in[p] == '\r' && in.size() - p < 2)) return State::kNeedMore;
  if (in[p] == '\n') {
    *pos += 1;
  } else if (in[p] == '\r' && in[p + 1] == '\n') {
    *pos += 2;
  } else {
    return Fail(400, "malformed chunked body: missing CRLF after a chunk");
  }
  phase_ = Phase::kChunkSize;
  return std::nullopt;
}

std::optional<HttpRequestParser::State> HttpRequestParser::StepChunkSize(absl::string_view in,
                                                                         size_t* pos) {
  const size_t nl = in.find('\n', *pos);
  if (nl == absl::string_view::npos) {
    if (in.size() - *pos > kMaxChunkSizeLine) return Fail(400, "chunk size line too long");
    return State::kNeedMore;
  }
  if (nl - *pos > kMaxChunkSizeLine) return Fail(400, "chunk size line too long");
  absl::string_view line = absl::StripSuffix(in.substr(*pos, nl - *pos), "\r");
  line = line.substr(0, line.find(';'));  // chunk extensions are ignored
  line = absl::StripTrailingAsciiWhitespace(line);
  uint64_t size = 0;
  if (line.empty() || line.size() > 15) return Fail(400, "malformed chunk size");
  for (char c : line) {
    const int h = HexValue(c);
    if (h < 0) return Fail(400, "malformed chunk size");
    size = size * 16 + static_cast<uint64_t>(h);
  }
  *pos = nl + 1;
  if (size == 0) {
    phase_ = Phase::kTrailers;
  } else if (req_.body.size() + size > limits_.max_body_bytes) {
    return Fail(413, absl::StrCat("request body larger than ", limits_.max_body_bytes, " bytes"));
  } else {
    remaining_ = size;
    phase_ = Phase::kChunkData;
  }
  return std::nullopt;
}

std::optional<HttpRequestParser::State> HttpRequestParser::StepTrailers(absl::string_view in,
                                                                        size_t* pos) {
  const size_t nl = in.find('\n', *pos);
  if (nl == absl::string_view::npos) {
    if (trailer_bytes_ + (in.size() - *pos) > limits_.max_header_bytes) {
      return Fail(431, "trailer fields too large");
    }
    return State::kNeedMore;
  }
  trailer_bytes_ += nl + 1 - *pos;
  if (trailer_bytes_ > limits_.max_header_bytes) return Fail(431, "trailer fields too large");
  const bool empty = nl == *pos || (nl == *pos + 1 && in[*pos] == '\r');
  *pos = nl + 1;
  if (empty) phase_ = Phase::kDone;  // trailer fields themselves are ignored
  return std::nullopt;
}

HttpRequestParser::State HttpRequestParser::ParseRequestLine(absl::string_view line) {
  std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3) return Fail(400, "malformed request line");
  if (!IsToken(parts[0])) return Fail(400, "malformed method");
  req_.method = std::string(parts[0]);
  absl::string_view version = parts[2];
  if (version == "HTTP/1.1") {
    req_.minor_version = 1;
  } else if (version == "HTTP/1.0") {
    req_.minor_version = 0;
  } else if (version.size() == 8 && absl::StartsWith(version, "HTTP/") &&
             absl::ascii_isdigit(version[5]) && version[6] == '.' &&
             absl::ascii_isdigit(version[7])) {
    return Fail(505, "HTTP version not supported");
  } else {
    return Fail(400, "malformed HTTP version");
  }
  absl::string_view target = parts[1];
  for (char c : target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Fail(400, "malformed request target");
    }
  }
  req_.target = std::string(target);
  // Absolute form (proxies): drop scheme and authority.
  for (absl::string_view scheme : {"http://", "https://"}) {
    if (absl::StartsWithIgnoreCase(target, scheme)) {
      target.remove_prefix(scheme.size());
      const size_t slash = target.find_first_of("/?");
      target = slash == absl::string_view::npos ? absl::string_view("/") : target.substr(slash);
      if (!target.empty() && target[0] == '?') req_.target = absl::StrCat("/", target);
      break;
    }
  }
  if (target.empty() || (target[0] != '/' && target != "*")) {
    return Fail(400, "malformed request target");
  }
  const size_t q = target.find('?');
  absl::string_view path = target.substr(0, q);
  if (q != absl::string_view::npos) req_.query = std::string(target.substr(q + 1));
  if (!PercentDecode(path, &req_.path)) return Fail(400, "invalid URL escape in path");
  req_.keep_alive = req_.minor_version >= 1;
  return State::kNeedMore;
}

HttpRequestParser::State HttpRequestParser::ParseHead(absl::string_view head) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, '\n');
  // The last two elements are the empty line's remains.
  while (!lines.empty() && absl::StripSuffix(lines.back(), "\r").empty()) lines.pop_back();
  if (lines.empty()) return Fail(400, "empty request");
  // lines[0], the request line, was parsed when it arrived.
  for (size_t i = 1; i < lines.size(); ++i) {
    if (ParseHeaderLine(absl::StripSuffix(lines[i], "\r")) == State::kError) {
      return State::kError;
    }
  }
  return State::kNeedMore;
}

HttpRequestParser::State HttpRequestParser::ParseHeaderLine(absl::string_view line) {
  if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
    return Fail(400, "obsolete header line folding");
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return Fail(400, "malformed header field");
  absl::string_view name = line.substr(0, colon);
  if (!IsToken(name)) return Fail(400, "malformed header field name");
  if (req_.headers.size() >= limits_.max_headers) {
    return Fail(431, absl::StrCat("more than ", limits_.max_headers, " header fields"));
  }
  absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  for (char c : value) {
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
      return Fail(400, "malformed header field value");
    }
  }
  std::string lower = absl::AsciiStrToLower(name);
  if (lower == "connection") {
    for (absl::string_view tok : absl::StrSplit(value, ',')) {
      tok = absl::StripAsciiWhitespace(tok);
      if (absl::EqualsIgnoreCase(tok, "close")) req_.keep_alive = false;
      if (absl::EqualsIgnoreCase(tok, "keep-alive") && req_.minor_version == 0) {
        req_.keep_alive = true;
      }
    }
  } else if (lower == "expect") {
    if (absl::EqualsIgnoreCase(value, "100-continue") && req_.minor_version >= 1) {
      req_.expect_continue = true;
    }
  }
  req_.headers.emplace_back(std::move(lower), std::string(value));
  return State::kNeedMore;
}

HttpRequestParser::State HttpRequestParser::StartBody() {
  const std::string* te = req_.Header("transfer-encoding");
  bool has_length = false;
  uint64_t length = 0;
  for (const auto& [k, v] : req_.headers) {
    if (k != "content-length") continue;
    for (absl::string_view part : absl::StrSplit(v, ',')) {
      uint64_t n;
      if (!ParseDecimal(absl::StripAsciiWhitespace(part), &n)) {
        return Fail(400, "malformed Content-Length");
      }
      if (has_length && n != length) return Fail(400, "conflicting Content-Length");
      has_length = true;
      length = n;
    }
  }
  if (te != nullptr) {
    if (has_length) return Fail(400, "both Transfer-Encoding and Content-Length");
    if (req_.minor_version == 0) return Fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(*te), "chunked")) {
      return Fail(501, "unsupported Transfer-Encoding (only chunked)");
    }
    phase_ = Phase::kChunkSize;
    return State::kNeedMore;
  }
  if (length > limits_.max_body_bytes) {
    return Fail(413, absl::StrCat("request body of ", length, " bytes is larger than the limit of ",
                                  limits_.max_body_bytes));
  }
  remaining_ = length;
  phase_ = length > 0 ? Phase::kBody : Phase::kDone;
  return State::kNeedMore;
}

}  // namespace pprof_sidecar
