// TLS engines and the local CA, without sockets: a client and a server Engine pumped into each other in memory.
#include <catch2/catch.hpp>

#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "proxy/ca.h"
#include "proxy/tls.h"

namespace ca = faultline::proxy::ca;
namespace tls = faultline::proxy::tls;

namespace {

// A fresh directory removed at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "faultline-tls-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// A CA and server certificates minted from it, shared by the tests (minting is the slow part).
struct Pki {
  TempDir dir;
  std::string localhost_cert, localhost_key, ip_cert, ip_key;
  Pki() {
    std::string why;
    REQUIRE(ca::init(dir.path, false, &why));
    REQUIRE(ca::mint(dir.path, "localhost", &localhost_cert, &localhost_key, &why));
    REQUIRE(ca::mint(dir.path, "127.0.0.1", &ip_cert, &ip_key, &why));
  }
  std::string ca_file() const { return ca::cert_path(dir.path); }
};

const Pki& pki() {
  static Pki p;
  return p;
}

std::shared_ptr<SSL_CTX> server_ctx(const std::string& cert, const std::string& key) {
  std::string why;
  auto ctx = tls::make_server_ctx_from_pem(cert, key, &why);
  INFO(why);
  REQUIRE(ctx);
  return ctx;
}

std::shared_ptr<SSL_CTX> client_ctx(bool trust_our_ca) {
  tls::ClientOptions opts;
  if (trust_our_ca) opts.ca_file = pki().ca_file();
  std::string why;
  auto ctx = tls::make_client_ctx(opts, &why);
  INFO(why);
  REQUIRE(ctx);
  return ctx;
}

// Both ends of one TLS connection and what each has decrypted so far.
struct Pair {
  std::unique_ptr<tls::Engine> client, server;
  std::string client_got, server_got;
  bool client_ok = true, server_ok = true;

  // Moves ciphertext both ways, in fragments of `frag` bytes (0 = as produced), until neither side has any.
  // An engine that failed still sends (its alert) but is fed no more.
  void pump(size_t frag = 0) {
    for (int round = 0; round < 10000; ++round) {
      bool moved = move(*client, *server, &server_got, &server_ok, frag);
      moved = move(*server, *client, &client_got, &client_ok, frag) || moved;
      if (!moved) return;
    }
    FAIL("the engines kept talking");
  }

  static bool move(tls::Engine& from, tls::Engine& to, std::string* got, bool* ok, size_t frag) {
    if (!from.has_output()) return false;
    std::string bytes = from.take_output();
    if (!*ok) return true;
    size_t step = frag ? frag : bytes.size();
    for (size_t off = 0; off < bytes.size() && *ok; off += step)
      *ok = to.feed(std::string_view(bytes).substr(off, step), got);
    return true;
  }
};

Pair connect(SSL_CTX* cctx, SSL_CTX* sctx, const std::string& host, bool verify, size_t frag = 0) {
  Pair p;
  p.client = tls::Engine::client(cctx, host, verify);
  p.server = tls::Engine::server(sctx);
  p.client->start();
  p.server->start();
  p.pump(frag);
  return p;
}

std::string payload(size_t n) {
  std::string s(n, '\0');
  uint32_t x = 12345;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

}  // namespace

TEST_CASE("tls: handshake in memory between client and server engines") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  Pair p = connect(cctx.get(), sctx.get(), "localhost", true);
  INFO("client: " << p.client->error() << " / server: " << p.server->error());
  REQUIRE(p.client_ok);
  REQUIRE(p.server_ok);
  CHECK(p.client->handshake_done());
  CHECK(p.server->handshake_done());
  CHECK(p.client->alpn() == "http/1.1");
  CHECK(p.server->alpn() == "http/1.1");
  CHECK(p.client->version() == "TLSv1.3");

  REQUIRE(p.client->write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  p.pump();
  CHECK(p.server_got == "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
  REQUIRE(p.server->write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
  p.pump();
  CHECK(p.client_got == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
  CHECK(p.client_ok);
  CHECK(p.server_ok);
}

TEST_CASE("tls: handshake and data fed one byte at a time") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  Pair p = connect(cctx.get(), sctx.get(), "localhost", true, 1);
  INFO("client: " << p.client->error() << " / server: " << p.server->error());
  REQUIRE(p.client_ok);
  REQUIRE(p.server_ok);
  REQUIRE(p.client->handshake_done());
  REQUIRE(p.server->handshake_done());
  std::string up = payload(40000), down = payload(30001);  // several records each
  REQUIRE(p.client->write(up));
  REQUIRE(p.server->write(down));
  p.pump(1);
  CHECK(p.server_got == up);
  CHECK(p.client_got == down);
}

TEST_CASE("tls: a 1 MiB payload both ways, in odd fragments") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  Pair p = connect(cctx.get(), sctx.get(), "localhost", true);
  REQUIRE(p.client->handshake_done());
  std::string big = payload(1 << 20);
  REQUIRE(p.client->write(big));
  p.pump(4093);
  CHECK(p.server_got.size() == big.size());
  CHECK(p.server_got == big);
  REQUIRE(p.server->write(big));
  p.pump();
  CHECK(p.client_got == big);
}

TEST_CASE("tls: TLS 1.2 works too, byte by byte") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  REQUIRE(SSL_CTX_set_max_proto_version(cctx.get(), TLS1_2_VERSION) == 1);
  Pair p = connect(cctx.get(), sctx.get(), "localhost", true, 1);
  INFO("client: " << p.client->error() << " / server: " << p.server->error());
  REQUIRE(p.client_ok);
  REQUIRE(p.server_ok);
  CHECK(p.client->version() == "TLSv1.2");
  CHECK(p.server->alpn() == "http/1.1");
  std::string up = payload(70000);
  REQUIRE(p.client->write(up));
  p.client->shutdown();
  p.pump(3);
  CHECK(p.server_got == up);
  CHECK(p.server->peer_closed());
}

TEST_CASE("tls: plaintext written before the handshake is sent once it completes") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  Pair p;
  p.client = tls::Engine::client(cctx.get(), "localhost", true);
  p.server = tls::Engine::server(sctx.get());
  REQUIRE(p.client->write("early "));
  REQUIRE(p.client->write("bytes"));
  p.client->start();
  p.pump(7);
  REQUIRE(p.client_ok);
  REQUIRE(p.server_ok);
  CHECK(p.server_got == "early bytes");
}

TEST_CASE("tls: close_notify is seen as peer_closed, and the other direction still flows") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  Pair p = connect(cctx.get(), sctx.get(), "localhost", true);
  REQUIRE(p.client->write("last words"));
  p.client->shutdown();
  CHECK_FALSE(p.client->write("too late"));
  p.pump();
  CHECK(p.server_got == "last words");
  CHECK(p.server->peer_closed());
  CHECK_FALSE(p.client->peer_closed());
  REQUIRE(p.server->write("reply after the client's close"));
  p.server->shutdown();
  p.pump();
  CHECK(p.client_got == "reply after the client's close");
  CHECK(p.client->peer_closed());
  CHECK(p.client_ok);
  CHECK(p.server_ok);
}

TEST_CASE("tls: shutdown before the handshake completes is sent after it") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  Pair p;
  p.client = tls::Engine::client(cctx.get(), "localhost", true);
  p.server = tls::Engine::server(sctx.get());
  REQUIRE(p.client->write("bye"));
  p.client->shutdown();
  p.client->start();
  p.pump();
  CHECK(p.server_got == "bye");
  CHECK(p.server->peer_closed());
}

TEST_CASE("tls: IP literals are verified against IP SANs") {
  auto cctx = client_ctx(true);
  SECTION("a certificate for 127.0.0.1") {
    auto sctx = server_ctx(pki().ip_cert, pki().ip_key);
    Pair p = connect(cctx.get(), sctx.get(), "127.0.0.1", true);
    INFO(p.client->error());
    CHECK(p.client_ok);
    CHECK(p.client->handshake_done());
  }
  SECTION("localhost's certificate also covers 127.0.0.1 and ::1") {
    auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
    for (const char* host : {"127.0.0.1", "::1", "[::1]"}) {
      INFO(host);
      Pair p = connect(cctx.get(), sctx.get(), host, true);
      INFO(p.client->error());
      CHECK(p.client_ok);
      CHECK(p.client->handshake_done());
    }
  }
  SECTION("a certificate for 127.0.0.1 does not cover 127.0.0.2") {
    auto sctx = server_ctx(pki().ip_cert, pki().ip_key);
    Pair p = connect(cctx.get(), sctx.get(), "127.0.0.2", true);
    CHECK_FALSE(p.client_ok);
    CHECK(p.client->error() == "certificate verify failed: IP address mismatch");
  }
}

TEST_CASE("tls: a certificate from an untrusted CA fails verification with a clear error") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(false);  // system trust store only
  Pair p = connect(cctx.get(), sctx.get(), "localhost", true);
  CHECK_FALSE(p.client_ok);
  CHECK_FALSE(p.client->handshake_done());
  CHECK(p.client->error() == "certificate verify failed: unable to get local issuer certificate");
  // The client's alert reached the server, which says what it heard.
  CHECK_FALSE(p.server_ok);
  INFO(p.server->error());
  CHECK(p.server->error().find("unknown ca") != std::string::npos);
  // A failed engine stays failed.
  std::string plain;
  CHECK_FALSE(p.client->feed("x", &plain));
  CHECK_FALSE(p.client->write("x"));
}

TEST_CASE("tls: a host name the certificate does not cover fails verification") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(true);
  Pair p = connect(cctx.get(), sctx.get(), "example.com", true);
  CHECK_FALSE(p.client_ok);
  CHECK(p.client->error() == "certificate verify failed: hostname mismatch");
}

TEST_CASE("tls: verify=false accepts an untrusted certificate and a wrong name") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto cctx = client_ctx(false);
  Pair p = connect(cctx.get(), sctx.get(), "example.com", false);
  INFO(p.client->error());
  CHECK(p.client_ok);
  CHECK(p.server_ok);
  CHECK(p.client->handshake_done());
  REQUIRE(p.client->write("ping"));
  p.pump();
  CHECK(p.server_got == "ping");
}

TEST_CASE("tls: a client offering no ALPN still gets a handshake, without ALPN") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  std::shared_ptr<SSL_CTX> bare(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  REQUIRE(bare);
  SECTION("no ALPN") {}
  SECTION("ALPN without http/1.1") {
    static const unsigned char h2[] = {2, 'h', '2'};
    REQUIRE(SSL_CTX_set_alpn_protos(bare.get(), h2, sizeof(h2)) == 0);
  }
  Pair p = connect(bare.get(), sctx.get(), "localhost", false);
  INFO(p.server->error());
  CHECK(p.server_ok);
  CHECK(p.server->handshake_done());
  CHECK(p.server->alpn().empty());
  CHECK(p.client->alpn().empty());
}

TEST_CASE("tls: garbage fed to a server engine is a fatal error that says so") {
  auto sctx = server_ctx(pki().localhost_cert, pki().localhost_key);
  auto server = tls::Engine::server(sctx.get());
  std::string plain;
  SECTION("plain HTTP") {
    CHECK_FALSE(server->feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &plain));
    INFO(server->error());
    CHECK(server->error().rfind("TLS handshake failed: ", 0) == 0);
    CHECK(server->error().find("http request") != std::string::npos);
  }
  SECTION("random bytes") {
    CHECK_FALSE(server->feed(payload(64), &plain));
    INFO(server->error());
    CHECK(server->error().rfind("TLS handshake failed: ", 0) == 0);
    CHECK(server->error().size() > std::string("TLS handshake failed: ").size());
  }
  CHECK(server->failed());
  CHECK(plain.empty());
}

TEST_CASE("tls: server contexts from files name the file on errors") {
  TempDir dir;
  std::string cert = dir.path + "/leaf.pem", key = dir.path + "/leaf.key", why;
  std::ofstream(cert) << pki().localhost_cert;
  std::ofstream(key) << pki().localhost_key;
  CHECK(tls::make_server_ctx(cert, key, &why));

  CHECK_FALSE(tls::make_server_ctx(dir.path + "/missing.pem", key, &why));
  CHECK(why.find("missing.pem") != std::string::npos);
  CHECK_FALSE(tls::make_server_ctx(cert, dir.path + "/missing.key", &why));
  CHECK(why.find("missing.key") != std::string::npos);
  std::ofstream(dir.path + "/other.key") << pki().ip_key;  // a valid key of another certificate
  CHECK_FALSE(tls::make_server_ctx(cert, dir.path + "/other.key", &why));
  INFO(why);
  CHECK(why.find("does not match") != std::string::npos);

  CHECK_FALSE(tls::make_server_ctx_from_pem(pki().localhost_cert, pki().ip_key, &why));
  INFO(why);
  CHECK(why.find("does not match") != std::string::npos);
  CHECK_FALSE(tls::make_server_ctx_from_pem("not a certificate", pki().localhost_key, &why));
  CHECK(why.find("certificate") != std::string::npos);
  tls::ClientOptions opts;
  opts.ca_file = dir.path + "/no-such-ca.pem";
  CHECK_FALSE(tls::make_client_ctx(opts, &why));
  CHECK(why.find("no-such-ca.pem") != std::string::npos);
}

TEST_CASE("ca: init writes a CA with a private key file of mode 0600 and refuses to overwrite") {
  TempDir dir;
  std::string sub = dir.path + "/nested/certs", why;
  CHECK_FALSE(ca::exists(sub));
  REQUIRE(ca::init(sub, false, &why));  // creates the directories
  CHECK(ca::exists(sub));
  struct stat st {};
  REQUIRE(stat(ca::key_path(sub).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  std::ifstream in(ca::cert_path(sub));
  std::string first((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(first.find("-----BEGIN CERTIFICATE-----") == 0);

  CHECK_FALSE(ca::init(sub, false, &why));
  CHECK(why.find(ca::cert_path(sub)) != std::string::npos);
  CHECK(why.find("already exists") != std::string::npos);

  // Only the key left: still refused, naming the key.
  std::filesystem::remove(ca::cert_path(sub));
  CHECK_FALSE(ca::init(sub, false, &why));
  CHECK(why.find(ca::key_path(sub)) != std::string::npos);

  chmod(ca::key_path(sub).c_str(), 0644);
  REQUIRE(ca::init(sub, true, &why));
  REQUIRE(stat(ca::key_path(sub).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::ifstream in2(ca::cert_path(sub));
  std::string second((std::istreambuf_iterator<char>(in2)), std::istreambuf_iterator<char>());
  CHECK(second != first);
}

TEST_CASE("ca: mint refuses bad hosts and names the file it could not read") {
  TempDir dir;
  std::string cert, key, why;
  CHECK_FALSE(ca::mint(dir.path, "localhost", &cert, &key, &why));
  CHECK(why.find(ca::cert_path(dir.path)) != std::string::npos);
  CHECK(why.find("No such file") != std::string::npos);
  REQUIRE(ca::init(dir.path, false, &why));
  for (const char* bad : {"", "a b", "evil/host", "x,IP:1.2.3.4"}) {
    INFO(bad);
    CHECK_FALSE(ca::mint(dir.path, bad, &cert, &key, &why));
    CHECK(why.find("not a host name") != std::string::npos);
  }
  // A key from another CA: caught before minting certificates nobody can verify.
  TempDir other;
  REQUIRE(ca::init(other.path, false, &why));
  std::filesystem::copy_file(ca::key_path(other.path), ca::key_path(dir.path),
                             std::filesystem::copy_options::overwrite_existing);
  CHECK_FALSE(ca::mint(dir.path, "localhost", &cert, &key, &why));
  CHECK(why.find("does not match") != std::string::npos);
}

TEST_CASE("ca: a minted certificate for a DNS name verifies under that name only") {
  std::string cert, key, why;
  REQUIRE(ca::mint(pki().dir.path, "api.test", &cert, &key, &why));
  auto sctx = server_ctx(cert, key);
  auto cctx = client_ctx(true);
  Pair ok = connect(cctx.get(), sctx.get(), "api.test", true);
  INFO(ok.client->error());
  CHECK(ok.client_ok);
  CHECK(ok.client->handshake_done());
  Pair bad = connect(cctx.get(), sctx.get(), "localhost", true);
  CHECK(bad.client->error() == "certificate verify failed: hostname mismatch");
}
