// bench_bulk: the bulk-throughput and idle-connection helper of tests/bench/run.
//
//   bench_bulk server [--host H] [--port P]
//       Sink. Prints "port=N" once listening. Each connection is read into a
//       256 KiB buffer and the bytes are counted and discarded; on EOF from the
//       client (its write side shut down) the server writes "<bytes received>\n"
//       and closes. The client therefore measures what really crossed the proxy,
//       including whatever the proxy still had buffered when the client stopped.
//
//   bench_bulk client --port P [--host H] [--conns N] (--secs T | --bytes B)
//                     [--write-size W]
//       Opens N connections, then each sends W-byte writes (default 64 KiB) as
//       fast as it can for T seconds (or B/N bytes), shuts down its write side
//       and waits for the server's count. Prints one JSON line:
//       {"conns":N,"secs":..,"sent_bytes":..,"recv_bytes":..,"bytes_per_sec":..,
//        "acked":true,"errors":0}
//       bytes_per_sec = recv_bytes / secs, where secs runs from the start of the
//       sends to the last server count. If a count never arrives (the proxy did
//       not forward the half-close, or closed early) "acked" is false and
//       bytes_per_sec falls back to sent_bytes / secs.
//
//   bench_bulk hold [--host H] [--port P]
//       Accepts connections and holds them open without reading. Prints
//       "port=N" once listening, then "accepted=K" each time the count changes
//       (at most every 20 ms, and always the final value).
//
//   bench_bulk idle --port P [--host H] [--conns N]
//       Opens N idle connections (paced: 100 at a time), prints "connected=N",
//       and holds them until stdin reaches EOF or a signal ends the process.
//
// Plain POSIX sockets and std::thread, no event loop: the tool must cost less
// than what it measures and stay obviously correct.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string mode;
  std::string host = "127.0.0.1";
  int port = 0;
  int conns = 1;
  double secs = 0;
  std::uint64_t bytes = 0;
  std::size_t write_size = 64 * 1024;
};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench_bulk: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "bench_bulk: %s\n"
               "usage: bench_bulk server|hold [--host H] [--port P]\n"
               "       bench_bulk client --port P [--host H] [--conns N] (--secs T | --bytes B) "
               "[--write-size W]\n"
               "       bench_bulk idle --port P [--host H] [--conns N]\n",
               msg);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage("missing mode");
  Options o;
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) usage("option without value");
    const char* v = argv[++i];
    if (a == "--host")
      o.host = v;
    else if (a == "--port")
      o.port = std::atoi(v);
    else if (a == "--conns")
      o.conns = std::atoi(v);
    else if (a == "--secs")
      o.secs = std::atof(v);
    else if (a == "--bytes")
      o.bytes = std::strtoull(v, nullptr, 10);
    else if (a == "--write-size")
      o.write_size = std::strtoull(v, nullptr, 10);
    else
      usage("unknown option");
  }
  if (o.conns < 1) usage("--conns must be >= 1");
  if (o.write_size < 1) usage("--write-size must be >= 1");
  return o;
}

sockaddr_in make_addr(const Options& o) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (inet_pton(AF_INET, o.host.c_str(), &sa.sin_addr) != 1) usage("--host must be an IPv4 address");
  return sa;
}

int listen_on(const Options& o) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa = make_addr(o);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) die("bind");
  if (listen(fd, 4096) < 0) die("listen");
  socklen_t len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) < 0) die("getsockname");
  std::printf("port=%d\n", ntohs(sa.sin_port));
  std::fflush(stdout);
  return fd;
}

int connect_to(const sockaddr_in& sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void set_timeout(int fd, int opt, int seconds) {
  timeval tv{};
  tv.tv_sec = seconds;
  setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

// ---- server (sink) ---------------------------------------------------------

void sink(int fd) {
  std::vector<char> buf(256 * 1024);
  std::uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n > 0) {
      total += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  // On a clean EOF, report the count. After a reset the write fails; fine.
  std::string reply = std::to_string(total) + "\n";
  (void)!write(fd, reply.data(), reply.size());
  close(fd);
}

int run_server(const Options& o) {
  int lfd = listen_on(o);
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept");
    }
    std::thread(sink, fd).detach();
  }
}

// ---- hold ------------------------------------------------------------------

int run_hold(const Options& o) {
  int lfd = listen_on(o);
  if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
  std::vector<int> held;
  std::size_t reported = 0;
  auto last_report = Clock::now();
  for (;;) {
    pollfd p{lfd, POLLIN, 0};
    int r = poll(&p, 1, 20);
    if (r < 0 && errno != EINTR) die("poll");
    if (r > 0) {
      for (;;) {
        int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        held.push_back(fd);
      }
    }
    auto now = Clock::now();
    if (held.size() != reported && (r == 0 || now - last_report >= std::chrono::milliseconds(20))) {
      reported = held.size();
      last_report = now;
      std::printf("accepted=%zu\n", reported);
      std::fflush(stdout);
    }
  }
}

// ---- idle ------------------------------------------------------------------

int run_idle(const Options& o) {
  sockaddr_in sa = make_addr(o);
  std::vector<int> fds;
  fds.reserve(static_cast<std::size_t>(o.conns));
  for (int i = 0; i < o.conns; ++i) {
    fds.push_back(connect_to(sa));
    if ((i + 1) % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::printf("connected=%d\n", o.conns);
  std::fflush(stdout);
  char c;
  for (;;) {
    ssize_t n = read(STDIN_FILENO, &c, 1);
    if (n == 0 || (n < 0 && errno != EINTR)) break;
  }
  for (int fd : fds) close(fd);
  return 0;
}

// ---- client ----------------------------------------------------------------

struct ConnResult {
  std::uint64_t sent = 0;
  std::uint64_t recv = 0;
  bool acked = false;
  bool error = false;
  Clock::time_point end{};
};

void pump(int fd, const Options& o, std::uint64_t quota, Clock::time_point deadline, std::atomic<int>& ready,
          ConnResult& res) {
  std::vector<char> buf(o.write_size, 'x');
  ready.fetch_sub(1);
  while (ready.load() > 0) std::this_thread::yield();

  set_timeout(fd, SO_SNDTIMEO, 10);
  std::uint64_t checks = 0;
  for (;;) {
    std::size_t want = buf.size();
    if (quota) {
      if (res.sent >= quota) break;
      want = static_cast<std::size_t>(std::min<std::uint64_t>(want, quota - res.sent));
    } else if ((checks++ & 7) == 0 && Clock::now() >= deadline) {
      break;
    }
    ssize_t n = write(fd, buf.data(), want);
    if (n < 0) {
      if (errno == EINTR) continue;
      res.error = true;
      break;
    }
    res.sent += static_cast<std::uint64_t>(n);
  }
  shutdown(fd, SHUT_WR);

  // Wait for the server's count ("<bytes>\n"); bounded.
  set_timeout(fd, SO_RCVTIMEO, 20);
  std::string reply;
  char tmp[64];
  for (;;) {
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n > 0) {
      reply.append(tmp, static_cast<std::size_t>(n));
      if (reply.find('\n') != std::string::npos) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  res.end = Clock::now();
  if (!reply.empty() && reply.back() == '\n') {
    res.recv = std::strtoull(reply.c_str(), nullptr, 10);
    res.acked = true;
  }
  close(fd);
}

int run_client(const Options& o) {
  if (o.port <= 0) usage("client needs --port");
  if (o.secs <= 0 && o.bytes == 0) usage("client needs --secs or --bytes");
  sockaddr_in sa = make_addr(o);
  std::vector<int> fds;
  for (int i = 0; i < o.conns; ++i) fds.push_back(connect_to(sa));

  std::vector<ConnResult> results(static_cast<std::size_t>(o.conns));
  std::atomic<int> ready{o.conns + 1};
  std::uint64_t quota = o.bytes ? std::max<std::uint64_t>(1, o.bytes / static_cast<std::uint64_t>(o.conns)) : 0;
  // The deadline is fixed after every thread is up; threads read it only
  // after the start barrier, so a plain variable published by it is enough.
  Clock::time_point deadline{};
  Clock::time_point start{};
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (int i = 0; i < o.conns; ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) std::this_thread::yield();
      pump(fds[static_cast<std::size_t>(i)], o, quota, deadline, ready, results[static_cast<std::size_t>(i)]);
    });
  }
  start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.secs));
  go.store(true);
  ready.fetch_sub(1);
  for (auto& t : threads) t.join();

  std::uint64_t sent = 0, recv = 0;
  bool acked = true;
  int errors = 0;
  Clock::time_point end = start;
  for (const auto& r : results) {
    sent += r.sent;
    recv += r.recv;
    acked = acked && r.acked;
    errors += r.error ? 1 : 0;
    end = std::max(end, r.end);
  }
  double secs = std::chrono::duration<double>(end - start).count();
  double bps = secs > 0 ? static_cast<double>(acked ? recv : sent) / secs : 0.0;
  std::printf(
      "{\"conns\":%d,\"secs\":%.4f,\"sent_bytes\":%llu,\"recv_bytes\":%llu,"
      "\"bytes_per_sec\":%.0f,\"acked\":%s,\"errors\":%d}\n",
      o.conns, secs, static_cast<unsigned long long>(sent), static_cast<unsigned long long>(recv), bps,
      acked ? "true" : "false", errors);
  std::fflush(stdout);
  return errors ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  Options o = parse(argc, argv);
  if (o.mode == "server") return run_server(o);
  if (o.mode == "hold") return run_hold(o);
  if (o.mode == "idle") {
    if (o.port <= 0) usage("idle needs --port");
    return run_idle(o);
  }
  if (o.mode == "client") return run_client(o);
  usage("unknown mode");
}
