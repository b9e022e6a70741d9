// Conn on a real loop and real loopback sockets: every address is tried in order, a failure is always
// reported from a callback (never from inside connect() itself), and zero-copy chunks go out whole.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "proxy/conn.h"
#include "proxy/worker.h"

using namespace faultline::proxy;

namespace {

// A socket bound on loopback (listening or not) and its address.
struct Socket {
  int fd = -1;
  sockaddr_storage addr{};
  Socket(int family, bool listening) {
    fd = ::socket(family, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    socklen_t len = 0;
    if (family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      len = sizeof *a;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof *a;
    }
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    if (listening) REQUIRE(::listen(fd, 8) == 0);
  }
  ~Socket() { ::close(fd); }
};

sockaddr_storage ipv4(const char* ip, uint16_t port) {
  sockaddr_storage ss{};
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  REQUIRE(inet_pton(AF_INET, ip, &a->sin_addr) == 1);
  return ss;
}

struct Recorder : ConnHandler {
  bool connected = false, closed = false;
  std::string error;
  void on_connected(Conn&) override { connected = true; }
  void on_data(Conn&, std::string_view) override {}
  void on_eof(Conn&) override {}
  void on_error(Conn&, const std::string& why, bool) override { error = why; }
  void on_closed(Conn&) override { closed = true; }
};

struct Loop {
  Runtime runtime;
  Worker worker{runtime, 0, {}};
  template <typename Done>
  void run_until(Done done) {
    for (int turns = 0; !done() && turns < 10000; ++turns) uv_run(worker.loop(), UV_RUN_ONCE);
    REQUIRE(done());
  }
  ~Loop() {
    worker.request_stop(true);
    worker.run();
  }
};

}  // namespace

TEST_CASE("the connector tries the next address when one refuses") {
  Loop loop;
  Socket refusing(AF_INET6, false);  // bound, not listening: ::1 refuses, as for an IPv4-only upstream
  Socket listening(AF_INET, true);
  Recorder r;
  Conn* c = Conn::connect(loop.worker, {refusing.addr, listening.addr}, "localhost", &r, 5000);
  loop.run_until([&] { return r.connected || !r.error.empty(); });
  CHECK(r.error.empty());
  CHECK(r.connected);
  c->close();
  loop.run_until([&] { return r.closed; });
}

TEST_CASE("the connector reports the last failure once every address refused") {
  Loop loop;
  Socket a(AF_INET6, false), b(AF_INET, false);
  Recorder r;
  Conn::connect(loop.worker, {a.addr, b.addr}, "localhost", &r, 5000);
  loop.run_until([&] { return r.closed; });
  CHECK_FALSE(r.connected);
  CHECK(r.error.find("refused") != std::string::npos);
}

TEST_CASE("a connect that fails inside connect() is reported from a callback, after connect returns") {
  Loop loop;
  Recorder r;
  // TCP to a multicast address fails synchronously (ENETUNREACH) on Linux.
  Conn* c = Conn::connect(loop.worker, {ipv4("224.0.0.1", 9)}, "224.0.0.1:9", &r, 5000);
  REQUIRE(c != nullptr);
  CHECK(r.error.empty());  // the caller holds the Conn before it can hear about the failure
  loop.run_until([&] { return r.closed; });
  CHECK_FALSE(r.error.empty());
  CHECK_FALSE(r.connected);
}

TEST_CASE("no address at all is a failure, reported from a callback") {
  Loop loop;
  Recorder r;
  Conn::connect(loop.worker, {}, "nowhere:1", &r, 5000);
  CHECK(r.error.empty());
  loop.run_until([&] { return r.closed; });
  CHECK(r.error == "no address to connect to");
}

namespace {
struct ChunkRecorder : Recorder {
  std::vector<faultline::faults::Chunk> chunks;
  bool drained = false, shut = false;
  bool wants_chunks() const override { return true; }
  void on_chunk(Conn&, faultline::faults::Chunk chunk) override { chunks.push_back(std::move(chunk)); }
  void on_drain(Conn&) override { drained = true; }
  void on_shut(Conn&) override { shut = true; }
};
}  // namespace

TEST_CASE("zero-copy: a chunk the socket cannot take at once is queued in its own buffer and arrives whole, "
          "and reads come as pooled buffers") {
  Loop loop;
  Socket listening(AF_INET, true);
  ChunkRecorder r;
  Conn* c = Conn::connect(loop.worker, {listening.addr}, "127.0.0.1", &r, 5000);
  loop.run_until([&] { return r.connected || !r.error.empty(); });
  REQUIRE(r.connected);
  const int peer = ::accept(listening.fd, nullptr, nullptr);
  REQUIRE(peer >= 0);

  // 8 MiB in one write: far more than loopback's socket buffers take while nobody reads.
  const size_t size = 8 * 1024 * 1024;
  faultline::faults::Chunk chunk;
  chunk.buf = faultline::faults::Buffer(size);
  for (size_t i = 0; i < size; ++i) chunk.buf.data()[i] = static_cast<char>((i * 7919) >> 3);
  const std::string expected(chunk.buf.data(), size);
  chunk.len = size;
  c->write(std::move(chunk));
  CHECK(c->queued() > 0);
  CHECK(c->queued() < size);

  std::string got;
  char buf[65536];
  REQUIRE(::fcntl(peer, F_SETFL, O_NONBLOCK) == 0);
  loop.run_until([&] {
    for (ssize_t n; (n = ::read(peer, buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
    return got.size() >= size;
  });
  CHECK(got == expected);
  CHECK(c->queued() == 0);
  CHECK(r.drained);

  c->read_start();
  REQUIRE(::write(peer, "hello", 5) == 5);
  loop.run_until([&] { return !r.chunks.empty(); });
  CHECK(r.chunks[0].view() == "hello");
  CHECK(r.chunks[0].buf.capacity() == faultline::faults::BufferPool::kDefaultSize);

  c->shutdown();
  loop.run_until([&] { return r.shut; });
  CHECK(::read(peer, buf, sizeof buf) == 0);  // our FIN
  ::close(peer);
  c->close();
  loop.run_until([&] { return r.closed; });
}
