#include "agent/server/http_params.h"

#include <arpa/inet.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pprof_sidecar {

absl::StatusOr<HostPort> ParseListenAddress(const std::string& addr) {
  HostPort hp;
  std::string port_str;
  if (!addr.empty() && addr[0] == '[') {
    size_t close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address \"", addr, "\": expected [IPv6]:PORT"));
    }
    hp.host = addr.substr(1, close - 1);
    port_str = addr.substr(close + 2);
  } else {
    size_t colon = addr.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address \"", addr, "\": expected HOST:PORT"));
    }
    hp.host = addr.substr(0, colon);
    port_str = addr.substr(colon + 1);
  }
  if (!absl::SimpleAtoi(port_str, &hp.port) || hp.port < 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", addr, "\": bad port \"", port_str, "\""));
  }
  if (hp.host.empty()) hp.host = "0.0.0.0";
  return hp;
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6;
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

absl::StatusOr<int> ParseSecondsParam(const std::optional<std::string>& param, int default_seconds,
                                      int max_seconds) {
  if (!param) return default_seconds;
  const std::string& value = *param;
  int64_t s;
  if (!absl::SimpleAtoi(value, &s) || s <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid seconds=\"", value, "\": want a positive integer"));
  }
  if (s > max_seconds) {
    return absl::InvalidArgumentError(absl::StrCat("profile duration exceeds the maximum: seconds=",
                                                   s, " > ", max_seconds,
                                                   " (--max_profile_seconds)"));
  }
  return static_cast<int>(s);
}

std::vector<uint64_t> ParseSymbolRequest(absl::string_view input, size_t max_pcs) {
  std::vector<uint64_t> pcs;
  for (absl::string_view word : absl::StrSplit(input, '+', absl::SkipEmpty())) {
    if (pcs.size() >= max_pcs) break;
    absl::string_view w = absl::StripAsciiWhitespace(word);
    if (!absl::ConsumePrefix(&w, "0x")) absl::ConsumePrefix(&w, "0X");
    uint64_t pc;
    if (w.empty() || !absl::SimpleHexAtoi(w, &pc)) continue;
    pcs.push_back(pc);
  }
  return pcs;
}

}  // namespace pprof_sidecar
