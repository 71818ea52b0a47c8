// HttpServer over real sockets: slow, many, pipelining, half-closing and oversized clients,
// lanes, HEAD/405, and shutdown with requests in flight.
#include "agent/server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace pprof_sidecar {
namespace {

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads until the peer closes or `timeout` passes.
std::string ReadAll(int fd, absl::Duration timeout) {
  std::string out;
  const absl::Time deadline = absl::Now() + timeout;
  char buf[65536];
  while (absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (poll(&p, 1, std::max(ms, 1)) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

struct Response {
  int status = 0;
  std::string head, body;
};

// Reads one response (Content-Length framed) from `buf`, refilled from `fd`.
bool ReadResponse(int fd, std::string* buf, Response* r, absl::Duration timeout,
                  bool head_request = false) {
  const absl::Time deadline = absl::Now() + timeout;
  char tmp[65536];
  auto fill = [&]() {
    pollfd p{fd, POLLIN, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0 || poll(&p, 1, ms) <= 0) return false;
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf->append(tmp, static_cast<size_t>(n));
    return true;
  };
  size_t end;
  while ((end = buf->find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return false;
  }
  r->head = buf->substr(0, end + 4);
  buf->erase(0, end + 4);
  r->status = 0;
  if (r->head.size() > 12) absl::SimpleAtoi(r->head.substr(9, 3), &r->status);
  size_t len = 0;
  size_t cl = r->head.find("Content-Length: ");
  if (cl != std::string::npos && !head_request) {
    absl::SimpleAtoi(r->head.substr(cl + 16, r->head.find("\r\n", cl) - cl - 16), &len);
  }
  while (buf->size() < len) {
    if (!fill()) return false;
  }
  r->body = buf->substr(0, len);
  buf->erase(0, len);
  return true;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(HttpServer::Options o = {}) {
    server_ = std::make_unique<HttpServer>(o);
    control_ = server_->AddLane("control", 2, 16);
    window_ = server_->AddLane("window", 4, 0);
    server_->SetObserver([this](const HttpRequest*, const HttpResponse& r) {
      observed_.fetch_add(1);
      last_status_.store(r.status);
    });
    server_->Handle({"GET"}, "/healthz", control_,
                    [](const HttpRequest& req, const RequestContext&, HttpResponse* r) {
                      r->SetContent(absl::StrCat("ok ", req.method, "\n"), "text/plain");
                    });
    server_->Handle({"GET", "POST"}, "/echo", control_,
                    [](const HttpRequest& req, const RequestContext&, HttpResponse* r) {
                      r->SetContent(absl::StrCat(req.method, " ", req.body), "text/plain");
                    });
    // Holds a window until released, cut short, or the client goes away.
    server_->Handle({"GET"}, "/window", window_,
                    [this](const HttpRequest& req, const RequestContext& ctx, HttpResponse* r) {
                      running_.fetch_add(1);
                      if (req.method == "HEAD") {
                        r->SetHeader("Content-Type", "application/octet-stream");
                        return;
                      }
                      while (!release_.load() && !ctx.shutting_down() && !ctx.client_gone()) {
                        absl::SleepFor(absl::Milliseconds(5));
                      }
                      r->SetContent(ctx.shutting_down() ? "cut short" : "full window",
                                    "application/octet-stream");
                    });
    ASSERT_TRUE(server_->Bind("127.0.0.1", 0).ok());
    serve_ = std::thread([this] { served_ = server_->Serve(); });
  }
  void TearDown() override {
    release_.store(true);
    if (server_) {
      server_->Shutdown();
      serve_.join();
    }
  }

  Response Get(const std::string& request, absl::Duration timeout = absl::Seconds(5)) {
    int fd = Connect(server_->port());
    EXPECT_GE(fd, 0);
    EXPECT_TRUE(SendAll(fd, request));
    std::string buf;
    Response r;
    ReadResponse(fd, &buf, &r, timeout, absl::StartsWith(request, "HEAD"));
    close(fd);
    return r;
  }

  std::unique_ptr<HttpServer> server_;
  std::thread serve_;
  absl::Status served_;
  int control_ = 0, window_ = 0;
  std::atomic<bool> release_{false};
  std::atomic<int> running_{0}, observed_{0}, last_status_{0};
};

TEST_F(HttpServerTest, SlowClientsDoNotDelayOthers) {
  Start();
  // 40 clients sending their request a byte every 100 ms (each would take ~2 s).
  std::vector<int> slow;
  for (int i = 0; i < 40; ++i) slow.push_back(Connect(server_->port()));
  std::atomic<bool> stop{false};
  std::thread dribble([&] {
    const std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t i = 0; i < req.size() && !stop.load(); ++i) {
      for (int fd : slow) send(fd, &req[i], 1, MSG_NOSIGNAL);
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  absl::SleepFor(absl::Milliseconds(300));
  absl::Duration worst;
  for (int i = 0; i < 10; ++i) {
    const absl::Time t0 = absl::Now();
    Response r = Get("GET /healthz HTTP/1.1\r\n\r\n", absl::Seconds(2));
    worst = std::max(worst, absl::Now() - t0);
    EXPECT_EQ(r.status, 200);
  }
  printf("/healthz with 40 slow clients: worst of 10 %s\n", absl::FormatDuration(worst).c_str());
  EXPECT_LT(worst, absl::Seconds(1));
  stop.store(true);
  dribble.join();
  for (int fd : slow) close(fd);
}

TEST_F(HttpServerTest, HeaderDeadlineAnswers408) {
  HttpServer::Options o;
  o.header_timeout = absl::Milliseconds(500);
  Start(o);
  int fd = Connect(server_->port());
  ASSERT_TRUE(SendAll(fd, "GET /healthz HTTP/1.1\r\nHost:"));
  const absl::Time t0 = absl::Now();
  std::string out = ReadAll(fd, absl::Seconds(5));
  close(fd);
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 408 ")) << out;
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  EXPECT_EQ(server_->stats().timeouts, 1u);
}

TEST_F(HttpServerTest, FullLaneGets503AndOtherLanesStillAnswer) {
  Start();
  std::vector<std::future<Response>> windows;
  for (int i = 0; i < 4; ++i) {
    windows.push_back(std::async(std::launch::async, [this] {
      return Get("GET /window HTTP/1.1\r\n\r\n", absl::Seconds(10));
    }));
  }
  for (int i = 0; i < 200 && running_.load() < 4; ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(running_.load(), 4);
  Response busy = Get("GET /window HTTP/1.1\r\n\r\n");
  EXPECT_EQ(busy.status, 503);
  EXPECT_TRUE(absl::StrContains(busy.body, "too many concurrent window requests")) << busy.body;
  EXPECT_TRUE(absl::StrContains(busy.head, "Retry-After: 1")) << busy.head;
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(Get("GET /healthz HTTP/1.1\r\n\r\n").status, 200);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  release_.store(true);
  for (auto& w : windows) EXPECT_EQ(w.get().body, "full window");
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  Start();
  int fd = Connect(server_->port());
  ASSERT_TRUE(SendAll(fd,
                      "GET /healthz HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 3\r\n"
                      "\r\nabcDELETE /healthz HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n"));
  std::string buf;
  Response a, b, c, d;
  ASSERT_TRUE(ReadResponse(fd, &buf, &a, absl::Seconds(5)));
  ASSERT_TRUE(ReadResponse(fd, &buf, &b, absl::Seconds(5)));
  ASSERT_TRUE(ReadResponse(fd, &buf, &c, absl::Seconds(5)));
  ASSERT_TRUE(ReadResponse(fd, &buf, &d, absl::Seconds(5)));
  close(fd);
  EXPECT_EQ(a.body, "ok GET\n");
  EXPECT_EQ(b.body, "POST abc");
  EXPECT_EQ(c.status, 405);
  EXPECT_EQ(d.body, "GET ");
}

TEST_F(HttpServerTest, HalfClosedClientGetsItsResponses) {
  Start();
  int fd = Connect(server_->port());
  ASSERT_TRUE(SendAll(fd, "GET /healthz HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n"));
  shutdown(fd, SHUT_WR);
  std::string out = ReadAll(fd, absl::Seconds(5));  // the server closes after answering both
  close(fd);
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200 ")) << out;
  EXPECT_TRUE(absl::StrContains(out, "ok GET\n")) << out;
  EXPECT_TRUE(absl::EndsWith(out, "GET ")) << out;
}

TEST_F(HttpServerTest, HeadRunsNoWindowAndSendsNoBody) {
  Start();
  int fd = Connect(server_->port());
  ASSERT_TRUE(SendAll(fd, "HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"));
  std::string buf;
  Response h, g;
  ASSERT_TRUE(ReadResponse(fd, &buf, &h, absl::Seconds(5), true));
  ASSERT_TRUE(ReadResponse(fd, &buf, &g, absl::Seconds(5)));
  close(fd);
  EXPECT_EQ(h.status, 200);
  EXPECT_TRUE(absl::StrContains(h.head, "Content-Length: 8\r\n")) << h.head;  // "ok HEAD\n"
  EXPECT_EQ(g.body, "ok GET\n");  // the HEAD body was not sent
  Response w = Get("HEAD /window HTTP/1.1\r\n\r\n");
  EXPECT_EQ(w.status, 200);
  EXPECT_FALSE(absl::StrContains(w.head, "Content-Length")) << w.head;
}

TEST_F(HttpServerTest, UnsupportedMethodIs405WithAllow) {
  Start();
  Response d = Get("DELETE /healthz HTTP/1.1\r\n\r\n");
  EXPECT_EQ(d.status, 405);
  EXPECT_TRUE(absl::StrContains(d.head, "\r\nAllow: GET, HEAD\r\n")) << d.head;
  Response p = Get("PUT /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nx");
  EXPECT_EQ(p.status, 405);
  EXPECT_TRUE(absl::StrContains(p.head, "\r\nAllow: GET, POST, HEAD\r\n")) << p.head;
  EXPECT_EQ(Get("DELETE /nowhere HTTP/1.1\r\n\r\n").status, 404);
}

TEST_F(HttpServerTest, OversizedRequestsAreRefusedBeforeBeingRead) {
  Start();
  // A 256 MB body is refused from its Content-Length; the server does not wait for it.
  int fd = Connect(server_->port());
  ASSERT_TRUE(SendAll(fd, "POST /echo HTTP/1.1\r\nContent-Length: 268435456\r\n\r\n"));
  std::string buf;
  Response r;
  ASSERT_TRUE(ReadResponse(fd, &buf, &r, absl::Seconds(5)));
  close(fd);
  EXPECT_EQ(r.status, 413);
  // 100,000 header fields.
  fd = Connect(server_->port());
  std::string flood = "GET /healthz HTTP/1.1\r\n";
  for (int i = 0; i < 100000; ++i) absl::StrAppend(&flood, "X-", i, ": y\r\n");
  std::thread sender([&] { SendAll(fd, flood + "\r\n"); });
  buf.clear();
  ASSERT_TRUE(ReadResponse(fd, &buf, &r, absl::Seconds(5)));
  EXPECT_EQ(r.status, 431);
  shutdown(fd, SHUT_RDWR);
  sender.join();
  close(fd);
  EXPECT_EQ(Get("GET /" + std::string(10000, 'a') + " HTTP/1.1\r\n\r\n").status, 414);
  EXPECT_EQ(server_->stats().rejected_limits, 3u);
  EXPECT_EQ(Get("GET /healthz HTTP/1.1\r\n\r\n").status, 200);
}

TEST_F(HttpServerTest, ExpectContinue) {
  Start();
  int fd = Connect(server_->port());
  ASSERT_TRUE(
      SendAll(fd, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  std::string buf;
  Response cont, r;
  ASSERT_TRUE(ReadResponse(fd, &buf, &cont, absl::Seconds(5)));
  EXPECT_EQ(cont.status, 100);
  ASSERT_TRUE(SendAll(fd, "hi"));
  ASSERT_TRUE(ReadResponse(fd, &buf, &r, absl::Seconds(5)));
  close(fd);
  EXPECT_EQ(r.body, "POST hi");
}

TEST_F(HttpServerTest, ManyIdleConnectionsMakeRoom) {
  HttpServer::Options o;
  o.max_connections = 8;
  Start(o);
  std::vector<int> idle;
  for (int i = 0; i < 20; ++i) idle.push_back(Connect(server_->port()));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(Get("GET /healthz HTTP/1.1\r\n\r\n").status, 200);
  EXPECT_GE(server_->stats().connections_evicted, 12u);
  EXPECT_LE(server_->stats().connections_open, 8u);
  for (int fd : idle) close(fd);
}

TEST_F(HttpServerTest, ObserverSeesTheResponseBeforeTheClientDoes) {
  Start();
  for (int i = 1; i <= 200; ++i) {
    Response r = Get("GET /healthz HTTP/1.1\r\n\r\n");
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(observed_.load(), i);
  }
}

TEST_F(HttpServerTest, ShutdownEndsWindowsAndWritesTheirResponses) {
  Start();
  auto w = std::async(std::launch::async,
                      [this] { return Get("GET /window HTTP/1.1\r\n\r\n", absl::Seconds(10)); });
  for (int i = 0; i < 200 && running_.load() < 1; ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(running_.load(), 1);
  const absl::Time t0 = absl::Now();
  server_->Shutdown();
  Response r = w.get();
  serve_.join();
  const absl::Duration took = absl::Now() - t0;
  server_.reset();
  printf("shutdown with a window open: %s\n", absl::FormatDuration(took).c_str());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "cut short");
  EXPECT_TRUE(absl::StrContains(r.head, "Connection: close")) << r.head;
  EXPECT_LT(took, absl::Seconds(2));
  EXPECT_TRUE(served_.ok()) << served_;
}

}  // namespace
}  // namespace pprof_sidecar
