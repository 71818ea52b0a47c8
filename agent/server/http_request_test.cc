#include "agent/server/http_request.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace pprof_sidecar {
namespace {

using State = HttpRequestParser::State;

// Feeds `bytes` in pieces of `step` bytes, as a connection buffer would (unconsumed bytes stay).
State FeedAll(HttpRequestParser& p, const std::string& bytes, size_t step, std::string* rest) {
  std::string buf;
  State st = State::kNeedMore;
  for (size_t i = 0; i < bytes.size(); i += step) {
    buf.append(bytes, i, step);
    size_t used = 0;
    st = p.Feed(buf, &used);
    buf.erase(0, used);
    if (st != State::kNeedMore) break;
  }
  if (rest) *rest = buf;
  return st;
}

TEST(HttpRequestParserTest, SimpleGetInAnyPieces) {
  const std::string req =
      "GET /debug/pprof/pro%66ile?seconds=5&x=a+b HTTP/1.1\r\nHost: x\r\nX-A:  v \r\n\r\n";
  for (size_t step : {1u, 2u, 7u, 1000u}) {
    HttpRequestParser p(HttpLimits{});
    ASSERT_EQ(FeedAll(p, req, step, nullptr), State::kComplete) << step;
    const HttpRequest& r = p.request();
    EXPECT_EQ(r.method, "GET");
    EXPECT_EQ(r.path, "/debug/pprof/profile");
    EXPECT_EQ(r.query, "seconds=5&x=a+b");
    EXPECT_EQ(r.minor_version, 1);
    ASSERT_NE(r.Header("x-a"), nullptr);
    EXPECT_EQ(*r.Header("x-a"), "v");
    EXPECT_TRUE(r.keep_alive);
    EXPECT_TRUE(r.body.empty());
  }
}

TEST(HttpRequestParserTest, PipelinedRequestsStayUnconsumed) {
  HttpRequestParser p(HttpLimits{});
  std::string two = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
  size_t used = 0;
  ASSERT_EQ(p.Feed(two, &used), State::kComplete);
  EXPECT_EQ(p.request().path, "/a");
  two.erase(0, used);
  p.Reset();
  ASSERT_EQ(p.Feed(two, &used), State::kComplete);
  EXPECT_EQ(p.request().path, "/b");
  EXPECT_EQ(used, two.size());
}

TEST(HttpRequestParserTest, BodiesByLengthAndChunked) {
  HttpRequestParser p(HttpLimits{});
  std::string rest;
  ASSERT_EQ(FeedAll(p, "POST /s HTTP/1.1\r\nContent-Length: 5\r\n\r\n0x1+2GET", 3, &rest),
            State::kComplete);
  EXPECT_EQ(p.request().body, "0x1+2");
  EXPECT_EQ(rest.substr(0, 1), "G");
  HttpRequestParser c(HttpLimits{});
  ASSERT_EQ(FeedAll(c,
                    "POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n0x1\r\n"
                    "2\r\n+2\r\n0\r\nTrailer: x\r\n\r\n",
                    1, nullptr),
            State::kComplete);
  EXPECT_EQ(c.request().body, "0x1+2");
}

TEST(HttpRequestParserTest, LimitsAreAnsweredWithTheirStatus) {
  HttpLimits lim;
  lim.max_request_line = 100;
  lim.max_header_bytes = 1000;
  lim.max_headers = 10;
  lim.max_body_bytes = 64;
  struct Case {
    std::string bytes;
    int status;
  } cases[] = {
      {"GET /" + std::string(200, 'a') + " HTTP/1.1\r\n\r\n", 414},
      {"GET /" + std::string(200, 'a'), 414},  // known before the line ends
      {"GET / HTTP/1.1\r\nA: " + std::string(2000, 'b') + "\r\n\r\n", 431},
      {"GET / HTTP/1.1\r\nA: " + std::string(2000, 'b'), 431},
      {[] {
         std::string s = "GET / HTTP/1.1\r\n";
         for (int i = 0; i < 11; ++i) s += absl::StrCat("H", i, ": x\r\n");
         return s + "\r\n";
       }(),
       431},
      {"POST / HTTP/1.1\r\nContent-Length: 268435456\r\n\r\n", 413},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + std::string(64, 'x') +
           "\r\n1\r\nx\r\n",
       413},
      {"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"GET / FTP/1.0\r\n\r\n", 400},
      {"GET /%zz HTTP/1.1\r\n\r\n", 400},
      {"GET x HTTP/1.1\r\n\r\n", 400},
      {"G(T / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n folded\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400},
      {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 21), 400},
  };
  for (const Case& c : cases) {
    HttpRequestParser p(lim);
    EXPECT_EQ(FeedAll(p, c.bytes, 13, nullptr), State::kError) << c.bytes.substr(0, 60);
    EXPECT_EQ(p.error_status(), c.status) << c.bytes.substr(0, 60) << ": " << p.error_message();
  }
}

TEST(HttpRequestParserTest, ConnectionAndExpect) {
  HttpRequestParser p(HttpLimits{});
  ASSERT_EQ(FeedAll(p, "GET / HTTP/1.0\r\n\r\n", 100, nullptr), State::kComplete);
  EXPECT_FALSE(p.request().keep_alive);
  p.Reset();
  ASSERT_EQ(FeedAll(p, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 100, nullptr),
            State::kComplete);
  EXPECT_TRUE(p.request().keep_alive);
  p.Reset();
  ASSERT_EQ(FeedAll(p, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 100, nullptr),
            State::kComplete);
  EXPECT_FALSE(p.request().keep_alive);
  p.Reset();
  size_t used = 0;
  std::string head = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
  EXPECT_EQ(p.Feed(head, &used), State::kNeedMore);
  EXPECT_TRUE(p.head_done());
  EXPECT_TRUE(p.request().expect_continue);
}

TEST(HttpRequestParserTest, AbsoluteFormAndLeadingEmptyLines) {
  HttpRequestParser p(HttpLimits{});
  ASSERT_EQ(
      FeedAll(p, "\r\n\r\nGET http://127.0.0.1:6060/healthz?x=1 HTTP/1.1\r\n\r\n", 5, nullptr),
      State::kComplete);
  EXPECT_EQ(p.request().path, "/healthz");
  EXPECT_EQ(p.request().query, "x=1");
}

TEST(ParseQueryTest, LikeGo) {
  auto q = ParseQuery("seconds=5&a=%41+b&flag&seconds=6");
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 4u);
  EXPECT_EQ((*q)[0], (std::pair<std::string, std::string>("seconds", "5")));
  EXPECT_EQ((*q)[1].second, "A b");
  EXPECT_EQ((*q)[2], (std::pair<std::string, std::string>("flag", "")));
  EXPECT_FALSE(ParseQuery("seconds=%zz").ok());
  EXPECT_FALSE(ParseQuery("a=1;b=2").ok());
}

}  // namespace
}  // namespace pprof_sidecar
