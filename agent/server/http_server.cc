#include "agent/server/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace pprof_sidecar {
namespace {

constexpr uint64_t kListenToken = 0;
constexpr uint64_t kWakeToken = 1;
constexpr uint64_t kFirstConnId = 2;
constexpr size_t kReadChunk = 16 << 10;
constexpr size_t kMaxReadPerEvent = 256 << 10;  // fairness between connections
constexpr absl::Duration kLinger = absl::Seconds(2);

std::string HttpDate(absl::Time t) {
  return absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT", t, absl::UTCTimeZone());
}

}  // namespace

const char* HttpStatusText(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

void HttpResponse::SetHeader(const std::string& name, const std::string& value) {
  RemoveHeader(name);
  headers.emplace_back(name, value);
}

void HttpResponse::RemoveHeader(const std::string& name) {
  headers.erase(
      std::remove_if(headers.begin(), headers.end(),
                     [&](const auto& h) { return absl::EqualsIgnoreCase(h.first, name); }),
      headers.end());
}

bool HttpResponse::HasHeader(const std::string& name) const {
  for (const auto& h : headers) {
    if (absl::EqualsIgnoreCase(h.first, name)) return true;
  }
  return false;
}

std::string HttpResponse::HeaderValue(const std::string& name) const {
  for (const auto& h : headers) {
    if (absl::EqualsIgnoreCase(h.first, name)) return h.second;
  }
  return "";
}

void HttpResponse::SetContent(std::string b, const std::string& content_type) {
  body = std::move(b);
  SetHeader("Content-Type", content_type);
}

struct HttpServer::Conn {
  enum class State { kReading, kDispatched, kWriting, kLingering };
  Conn(uint64_t i, int f, const HttpLimits& limits, absl::Time now)
      : id(i), fd(f), parser(limits), last_activity(now) {}
  uint64_t id;
  int fd;
  State state = State::kReading;
  bool closed = false;
  std::string in;  // received bytes not parsed yet
  HttpRequestParser parser;
  absl::Time request_start = absl::InfiniteFuture();  // first byte of the request being read
  absl::Time last_activity;
  size_t body_accounted = 0;  // of buffered_body_bytes_
  bool sent_continue = false;
  bool peer_eof = false;  // the client shut down its sending side
  std::string out;
  size_t out_off = 0;
  bool close_after_write = false;
  absl::Time write_progress;
  absl::Time linger_until;
  uint32_t interest = 0;
  std::shared_ptr<std::atomic<bool>> gone = std::make_shared<std::atomic<bool>>(false);
};

HttpServer::HttpServer(Options opts) : opts_(opts) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  not_found_.methods = {};
  not_found_.handler = [](const HttpRequest&, const RequestContext&, HttpResponse* r) {
    r->status = 404;
    r->SetContent("404 page not found\n", "text/plain; charset=utf-8");
    r->SetHeader("X-Content-Type-Options", "nosniff");
  };
}

HttpServer::~HttpServer() {
  shutdown_requested_.store(true);
  shutting_down_.store(true);
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_workers_ = true;
  }
  work_cv_.notify_all();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& lane : lanes_) {
      for (auto& t : lane->threads) threads.push_back(std::move(t));
      lane->threads.clear();
    }
  }
  for (auto& t : threads) t.join();
  for (auto& [id, c] : conns_) {
    if (!c->closed) close(c->fd);
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

int HttpServer::AddLane(const std::string& name, size_t workers, size_t queue) {
  std::lock_guard<std::mutex> l(mu_);
  auto lane = std::make_unique<Lane>();
  lane->name = name;
  lane->max_workers = std::max<size_t>(workers, 1);
  lane->max_queue = queue;
  lanes_.push_back(std::move(lane));
  return static_cast<int>(lanes_.size() - 1);
}

void HttpServer::Handle(const std::vector<std::string>& methods, const std::string& path,
                        LaneChooser choose, Handler handler) {
  exact_[path] = Route{methods, std::move(choose), std::move(handler)};
}

void HttpServer::Handle(const std::vector<std::string>& methods, const std::string& path, int lane,
                        Handler handler) {
  Handle(
      methods, path, [lane](const HttpRequest&) { return lane; }, std::move(handler));
}

void HttpServer::HandlePrefix(const std::vector<std::string>& methods, const std::string& prefix,
                              LaneChooser choose, Handler handler) {
  prefix_[prefix] = Route{methods, std::move(choose), std::move(handler)};
}

void HttpServer::HandlePrefix(const std::vector<std::string>& methods, const std::string& prefix,
                              int lane, Handler handler) {
  HandlePrefix(
      methods, prefix, [lane](const HttpRequest&) { return lane; }, std::move(handler));
}

void HttpServer::SetNotFound(int lane, Handler handler) {
  not_found_lane_ = lane;
  not_found_.handler = std::move(handler);
}

const HttpServer::Route* HttpServer::FindRoute(const std::string& path) const {
  auto it = exact_.find(path);
  if (it != exact_.end()) return &it->second;
  // Longest matching prefix.
  const Route* best = nullptr;
  size_t best_len = 0;
  for (const auto& [p, r] : prefix_) {
    if (p.size() > best_len && absl::StartsWith(path, p)) {
      best = &r;
      best_len = p.size();
    }
  }
  return best;
}

absl::Status HttpServer::Bind(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_str = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot bind ", host, ":", port, ": ", gai_strerror(rc)));
  }
  int err = 0;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                             : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      listen_fd_ = fd;
      break;
    }
    err = errno;
    close(fd);
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot bind ", host, ":", port, ": ", strerror(err)));
  }
  return absl::OkStatus();
}

void HttpServer::Shutdown() {
  shutdown_requested_.store(true);
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t n = write(wake_fd_, &one, sizeof(one));
    (void)n;
  }
}

HttpServer::Stats HttpServer::stats() const {
  Stats s;
  s.connections_open = connections_open_.load();
  s.connections_total = connections_total_.load();
  s.connections_evicted = evicted_.load();
  s.timeouts = timeouts_.load();
  s.rejected_busy = rejected_busy_.load();
  s.rejected_limits = rejected_limits_.load();
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& lane : lanes_) s.lane_running[lane->name] = lane->busy;
  return s;
}

void HttpServer::Observe(const HttpRequest* req, const HttpResponse& resp) {
  if (observer_) observer_(req, resp);
}

absl::Status HttpServer::Serve() {
  if (listen_fd_ < 0) return absl::FailedPreconditionError("Serve() before a successful Bind()");
  if (wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  if (lanes_.empty()) AddLane("default", 4, 64);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return absl::InternalError(absl::StrCat("epoll_create1: ", strerror(errno)));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenToken;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.u64 = kWakeToken;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  Loop();
  for (auto& [id, c] : conns_) {
    if (!c->closed) Close(*c);
  }
  conns_.clear();
  return absl::OkStatus();
}

void HttpServer::Loop() {
  epoll_event events[64];
  while (true) {
    if (shutdown_requested_.load() && !shutting_down_.load()) BeginShutdown();
    absl::Time now = absl::Now();
    if (shutting_down_.load()) {
      bool busy = false;
      for (const auto& [id, c] : conns_) {
        busy |= !c->closed &&
                (c->state == Conn::State::kDispatched || c->state == Conn::State::kWriting);
      }
      if (!busy || now >= drain_deadline_) return;
    }
    // Sleep until the nearest deadline (checked at least every second).
    int timeout_ms = shutting_down_.load() ? 50 : 1000;
    const int n = epoll_wait(epoll_fd_, events, 64, timeout_ms);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < n; ++i) {
      const uint64_t token = events[i].data.u64;
      if (token == kListenToken) {
        Accept();
        continue;
      }
      if (token == kWakeToken) {
        uint64_t v;
        ssize_t r = read(wake_fd_, &v, sizeof(v));
        (void)r;
        continue;
      }
      auto it = conns_.find(token);
      if (it == conns_.end() || it->second->closed) continue;
      Conn& c = *it->second;
      const uint32_t e = events[i].events;
      if (e & (EPOLLERR | EPOLLHUP)) {
        // Reset, or both directions shut: nobody reads a response any more.
        c.gone->store(true);
        Close(c);
        continue;
      }
      if (e & EPOLLIN) OnReadable(c);
      if (!c.closed && (e & EPOLLOUT)) OnWritable(c);
    }
    DrainDone();
    // Connections whose response was written: their next (pipelined) request.
    while (!to_parse_.empty()) {
      std::vector<uint64_t> ids;
      ids.swap(to_parse_);
      for (uint64_t id : ids) {
        auto it = conns_.find(id);
        if (it != conns_.end() && !it->second->closed) ContinueReading(*it->second);
      }
    }
    CheckDeadlines(absl::Now());
    for (auto it = conns_.begin(); it != conns_.end();) {
      it = it->second->closed ? conns_.erase(it) : std::next(it);
    }
  }
}

void HttpServer::Accept() {
  while (true) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN, or out of descriptors (retried at the next readiness)
    }
    if (shutting_down_.load()) {
      close(fd);
      continue;
    }
    if (connections_open_.load() >= opts_.max_connections && !EvictOne()) {
      static const char kBusy[] =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
          "Connection: close\r\nRetry-After: 1\r\nContent-Length: 36\r\n\r\n"
          "pprof-sidecar: too many connections\n";
      ssize_t w = send(fd, kBusy, sizeof(kBusy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)w;
      close(fd);
      rejected_busy_.fetch_add(1);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const uint64_t id = kFirstConnId + next_conn_id_++;
    auto c = std::make_unique<Conn>(id, fd, opts_.limits, absl::Now());
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      continue;
    }
    c->interest = EPOLLIN;
    conns_[id] = std::move(c);
    connections_total_.fetch_add(1);
    connections_open_.fetch_add(1);
  }
}

bool HttpServer::EvictOne() {
  Conn* victim = nullptr;
  absl::Time oldest = absl::InfiniteFuture();
  for (auto& [id, c] : conns_) {
    if (c->closed) continue;
    absl::Time since;
    if (c->state == Conn::State::kLingering) {
      since = absl::InfinitePast();
    } else if (c->state == Conn::State::kReading) {
      since = c->parser.started() ? c->request_start : c->last_activity;
    } else {
      continue;  // a request is being answered
    }
    if (since < oldest) {
      oldest = since;
      victim = c.get();
    }
  }
  if (victim == nullptr) return false;
  evicted_.fetch_add(1);
  Close(*victim);
  return true;
}

void HttpServer::UpdateInterest(Conn& c) {
  if (c.closed) return;
  uint32_t want = 0;
  switch (c.state) {
    case Conn::State::kReading:
      if (!c.peer_eof) want |= EPOLLIN;
      break;
    case Conn::State::kDispatched:
    case Conn::State::kWriting:
      // Read ahead (pipelined requests) only up to one request head.
      if (!c.peer_eof && c.in.size() < opts_.limits.max_header_bytes) want |= EPOLLIN;
      if (c.state == Conn::State::kWriting && c.out_off < c.out.size()) want |= EPOLLOUT;
      break;
    case Conn::State::kLingering:
      want |= EPOLLIN;
      break;
  }
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c.id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.interest = want;
}

void HttpServer::OnReadable(Conn& c) {
  char buf[kReadChunk];
  size_t total = 0;
  while (total < kMaxReadPerEvent) {
    if (c.state != Conn::State::kLingering && c.state != Conn::State::kReading &&
        c.in.size() >= opts_.limits.max_header_bytes) {
      break;  // enough read ahead while a response is pending
    }
    ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
    if (n > 0) {
      total += static_cast<size_t>(n);
      c.last_activity = absl::Now();
      if (c.state != Conn::State::kLingering) c.in.append(buf, static_cast<size_t>(n));
      if (c.state == Conn::State::kReading) {
        ParseAndDispatch(c);
        if (c.closed) return;
      }
      continue;
    }
    if (n == 0) {
      c.peer_eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    c.gone->store(true);
    Close(c);
    return;
  }
  if (c.state == Conn::State::kLingering) {
    if (c.peer_eof) Close(c);
    return;
  }
  // A client that shut down its side: answer what it asked (half-close), close otherwise.
  if (c.peer_eof && c.state == Conn::State::kReading) {
    Close(c);
    return;
  }
  UpdateInterest(c);
}

void HttpServer::ParseAndDispatch(Conn& c) {
  while (c.state == Conn::State::kReading && !c.closed) {
    if (c.in.empty() && !c.parser.started()) return;
    size_t used = 0;
    const HttpRequestParser::State st = c.parser.Feed(c.in, &used);
    c.in.erase(0, used);
    if (c.parser.started() && c.request_start == absl::InfiniteFuture()) {
      c.request_start = absl::Now();
    }
    const size_t body = c.parser.request().body.size();
    if (body > c.body_accounted) {
      buffered_body_bytes_ += body - c.body_accounted;
      c.body_accounted = body;
      if (buffered_body_bytes_ > opts_.max_buffered_body_bytes) {
        rejected_busy_.fetch_add(1);
        AnswerError(c, 503, "pprof-sidecar: too many request bodies arriving at once; retry later",
                    true);
        return;
      }
    }
    if (st == HttpRequestParser::State::kError) {
      const int code = c.parser.error_status();
      if (code == 413 || code == 414 || code == 431) rejected_limits_.fetch_add(1);
      AnswerError(c, code, c.parser.error_message(), true);
      return;
    }
    if (st == HttpRequestParser::State::kNeedMore) {
      const HttpRequest& r = c.parser.request();
      if (c.parser.head_done() && r.expect_continue && !c.sent_continue && c.in.empty()) {
        static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t w = send(c.fd, kContinue, sizeof(kContinue) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        c.sent_continue = true;
      }
      return;
    }
    HttpRequest req = c.parser.TakeRequest();
    buffered_body_bytes_ -= c.body_accounted;
    c.body_accounted = 0;
    c.parser.Reset();
    c.sent_continue = false;
    c.request_start = absl::InfiniteFuture();
    Dispatch(c, std::move(req));
  }
}

namespace {

HttpResponse PlainResponse(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.SetContent(std::move(body), "text/plain; charset=utf-8");
  return r;
}

// 405 if `route` does not take the request's method (HEAD goes where GET does), else nothing.
std::optional<HttpResponse> MethodNotAllowed(const std::vector<std::string>& methods,
                                             const HttpRequest& req) {
  const auto has = [&methods](const std::string& m) {
    return std::find(methods.begin(), methods.end(), m) != methods.end();
  };
  if (has(req.method) || (req.method == "HEAD" && has("GET"))) return std::nullopt;
  std::vector<std::string> allow = methods;
  if (has("GET")) allow.push_back("HEAD");
  HttpResponse r =
      PlainResponse(405, absl::StrCat("method ", req.method, " not allowed for ", req.path,
                                      "; allowed: ", absl::StrJoin(allow, ", "), "\n"));
  r.SetHeader("Allow", absl::StrJoin(allow, ", "));
  return r;
}

}  // namespace

void HttpServer::AnswerNow(Conn& c, HttpRequest req, HttpResponse r, bool keep_alive) {
  Observe(&req, r);
  StartResponse(c, std::move(r), req.method == "HEAD", keep_alive);
}

void HttpServer::Dispatch(Conn& c, HttpRequest req) {
  if (shutting_down_.load()) {
    AnswerNow(c, std::move(req), PlainResponse(503, "pprof-sidecar is shutting down\n"), false);
    return;
  }
  const Route* route = FindRoute(req.path);
  int lane_id = not_found_lane_;
  const Handler* handler = &not_found_.handler;
  if (route != nullptr) {
    if (std::optional<HttpResponse> r = MethodNotAllowed(route->methods, req)) {
      const bool keep_alive = req.keep_alive;
      AnswerNow(c, std::move(req), *std::move(r), keep_alive);
      return;
    }
    lane_id = route->choose ? route->choose(req) : 0;
    handler = &route->handler;
  }
  Enqueue(c, std::move(req), lane_id, handler);
}

void HttpServer::Enqueue(Conn& c, HttpRequest req, int lane_id, const Handler* handler) {
  std::unique_lock<std::mutex> l(mu_);
  if (lane_id < 0 || static_cast<size_t>(lane_id) >= lanes_.size()) lane_id = 0;
  Lane& lane = *lanes_[lane_id];
  if (lane.busy + lane.queue.size() >= lane.max_workers + lane.max_queue) {
    const size_t running = lane.busy, waiting = lane.queue.size();
    l.unlock();
    rejected_busy_.fetch_add(1);
    HttpResponse r = PlainResponse(
        503, absl::StrCat("pprof-sidecar: too many concurrent ", lane.name, " requests (", running,
                          " running, ", waiting, " waiting); retry later\n"));
    r.SetHeader("Retry-After", "1");
    const bool keep_alive = req.keep_alive;
    AnswerNow(c, std::move(req), std::move(r), keep_alive);
    return;
  }
  Job job;
  job.conn_id = c.id;
  job.handler = handler;
  job.gone = c.gone;
  job.request = std::move(req);
  lane.queue.push_back(std::move(job));
  const size_t idle = lane.workers - lane.busy;
  if (idle < lane.queue.size() && lane.workers < lane.max_workers) {
    ++lane.workers;
    lane.threads.emplace_back([this, lp = &lane] { WorkerLoop(lp); });
  }
  l.unlock();
  work_cv_.notify_all();
  c.state = Conn::State::kDispatched;
  UpdateInterest(c);
}

void HttpServer::WorkerLoop(Lane* lane) {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    work_cv_.wait(l, [&] { return stop_workers_ || !lane->queue.empty(); });
    if (lane->queue.empty()) return;  // stopping
    Job job = std::move(lane->queue.front());
    lane->queue.pop_front();
    ++lane->busy;
    l.unlock();
    HttpResponse resp;
    if (shutting_down_.load()) {
      resp.status = 503;
      resp.SetContent("pprof-sidecar is shutting down\n", "text/plain; charset=utf-8");
    } else {
      RequestContext ctx(job.gone, &shutting_down_);
      try {
        (*job.handler)(job.request, ctx, &resp);
      } catch (const std::exception& e) {
        resp = HttpResponse();
        resp.status = 500;
        resp.SetContent(absl::StrCat("internal error: ", e.what(), "\n"),
                        "text/plain; charset=utf-8");
      }
    }
    if (!resp.HasHeader("Content-Type") && !resp.body.empty()) {
      resp.SetHeader("Content-Type", "text/plain; charset=utf-8");
    }
    // Counted before the response can reach the client.
    Observe(&job.request, resp);
    Done d;
    d.conn_id = job.conn_id;
    d.head = job.request.method == "HEAD";
    d.keep_alive = job.request.keep_alive;
    d.response = std::move(resp);
    job = Job();
    l.lock();
    --lane->busy;
    done_.push_back(std::move(d));
    l.unlock();
    uint64_t one = 1;
    ssize_t n = write(wake_fd_, &one, sizeof(one));
    (void)n;
    l.lock();
  }
}

void HttpServer::DrainDone() {
  std::vector<Done> done;
  {
    std::lock_guard<std::mutex> l(mu_);
    done.swap(done_);
  }
  for (Done& d : done) {
    auto it = conns_.find(d.conn_id);
    if (it == conns_.end() || it->second->closed || it->second->state != Conn::State::kDispatched) {
      continue;  // the client went away
    }
    StartResponse(*it->second, std::move(d.response), d.head, d.keep_alive);
  }
}

void HttpServer::AnswerError(Conn& c, int status, const std::string& message, bool close_after) {
  HttpResponse r;
  r.status = status;
  r.SetContent(message + "\n", "text/plain; charset=utf-8");
  Observe(nullptr, r);
  StartResponse(c, std::move(r), false, !close_after);
}

void HttpServer::StartResponse(Conn& c, HttpResponse resp, bool head, bool keep_alive) {
  const bool close_after = !keep_alive || shutting_down_.load();
  std::string out =
      absl::StrCat("HTTP/1.1 ", resp.status, " ", HttpStatusText(resp.status), "\r\n");
  for (const auto& [k, v] : resp.headers) {
    if (absl::EqualsIgnoreCase(k, "Content-Length") || absl::EqualsIgnoreCase(k, "Connection") ||
        absl::EqualsIgnoreCase(k, "Date")) {
      continue;
    }
    absl::StrAppend(&out, k, ": ", v, "\r\n");
  }
  absl::StrAppend(&out, "Date: ", HttpDate(absl::Now()), "\r\n");
  // A HEAD handler that skipped building the body leaves its length unknown: not sent.
  if (!head || !resp.body.empty()) {
    absl::StrAppend(&out, "Content-Length: ", resp.body.size(), "\r\n");
  }
  absl::StrAppend(&out, close_after ? "Connection: close\r\n" : "", "\r\n");
  if (!head) out.append(resp.body);
  std::string().swap(resp.body);
  c.out = std::move(out);
  c.out_off = 0;
  c.state = Conn::State::kWriting;
  c.close_after_write = close_after;
  c.write_progress = absl::Now();
  FlushWrites(c);
}

void HttpServer::OnWritable(Conn& c) {
  if (c.state == Conn::State::kWriting) FlushWrites(c);
}

void HttpServer::FlushWrites(Conn& c) {
  while (c.out_off < c.out.size()) {
    ssize_t n = send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
    if (n > 0) {
      c.out_off += static_cast<size_t>(n);
      c.write_progress = absl::Now();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      UpdateInterest(c);
      return;
    }
    c.gone->store(true);
    Close(c);
    return;
  }
  std::string().swap(c.out);
  c.out_off = 0;
  if (c.close_after_write) {
    // Lingering close: stop sending, read (and drop) what the client still sends for a moment,
    // so that it reads the response instead of a reset.
    shutdown(c.fd, SHUT_WR);
    c.state = Conn::State::kLingering;
    c.linger_until = absl::Now() + kLinger;
    std::string().swap(c.in);
    UpdateInterest(c);
    return;
  }
  c.state = Conn::State::kReading;
  c.last_activity = absl::Now();
  to_parse_.push_back(c.id);  // a pipelined request may be waiting
}

void HttpServer::ContinueReading(Conn& c) {
  if (c.state != Conn::State::kReading) return;
  ParseAndDispatch(c);
  if (c.closed) return;
  if (c.state == Conn::State::kReading && c.peer_eof) {
    Close(c);  // half-closed client: everything it asked for is answered
    return;
  }
  UpdateInterest(c);
}

void HttpServer::Close(Conn& c) {
  if (c.closed) return;
  c.closed = true;
  close(c.fd);
  buffered_body_bytes_ -= c.body_accounted;
  c.body_accounted = 0;
  std::string().swap(c.in);
  std::string().swap(c.out);
  connections_open_.fetch_sub(1);
}

void HttpServer::CheckDeadlines(absl::Time now) {
  for (auto& [id, cp] : conns_) {
    Conn& c = *cp;
    if (c.closed) continue;
    switch (c.state) {
      case Conn::State::kReading:
        if (c.parser.started()) {
          const absl::Duration limit = c.parser.head_done()
                                           ? opts_.header_timeout + opts_.body_timeout
                                           : opts_.header_timeout;
          if (now - c.request_start > limit) {
            timeouts_.fetch_add(1);
            AnswerError(c, 408,
                        c.parser.head_done() ? "request body not received in time"
                                             : "request header not received in time",
                        true);
          }
        } else if (now - c.last_activity > opts_.idle_timeout) {
          Close(c);
        }
        break;
      case Conn::State::kWriting:
        if (now - c.write_progress > opts_.write_timeout) {
          timeouts_.fetch_add(1);
          c.gone->store(true);
          Close(c);
        }
        break;
      case Conn::State::kLingering:
        if (now > c.linger_until) Close(c);
        break;
      case Conn::State::kDispatched:
        break;
    }
  }
}

void HttpServer::BeginShutdown() {
  shutting_down_.store(true);
  drain_deadline_ = absl::Now() + opts_.drain_timeout;
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
  }
  for (auto& [id, c] : conns_) {
    if (!c->closed && c->state == Conn::State::kReading) Close(*c);
  }
  work_cv_.notify_all();
}

}  // namespace pprof_sidecar
