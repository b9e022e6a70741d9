#include "proxy/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <utility>

namespace faultline::proxy::tls {

namespace {

// ALPN wire format: length-prefixed protocol names.
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr size_t kReadChunk = 16 * 1024;  // one maximal TLS record of plaintext

std::shared_ptr<SSL_CTX> wrap(SSL_CTX* ctx) { return std::shared_ptr<SSL_CTX>(ctx, SSL_CTX_free); }

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// Settings both sides share. Renegotiation is refused: it would let a peer start a handshake in the middle of
// the data stream, which our write path (SSL_write wanting to read) has no reason to support.
bool common_setup(SSL_CTX* ctx, std::string* why) {
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    *why = "cannot require TLS 1.2: " + take_openssl_errors();
    return false;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  // Partial writes let write() hand over a large buffer record by record; a moving buffer is allowed because
  // pending_ may reallocate between a retried SSL_write and the next.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return true;
}

// The server's ALPN choice: http/1.1 if the client lists it. Otherwise no ALPN at all rather than a fatal
// alert, so a client that offers only h2 still gets HTTP/1.1 (the default without ALPN) instead of a failure.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
                void*) {
  for (unsigned int i = 0; i < inlen;) {
    unsigned int len = in[i];
    if (len == 0 || i + 1 + len > inlen) break;  // malformed list: OpenSSL validates it, stay safe anyway
    if (len == kAlpnHttp11[0] && std::memcmp(in + i + 1, kAlpnHttp11 + 1, len) == 0) {
      *out = in + i + 1;  // points into the client's list, which outlives the callback (OpenSSL copies it)
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

std::shared_ptr<SSL_CTX> new_server_ctx(std::string* why) {
  auto ctx = wrap(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    *why = "cannot create a TLS server context: " + take_openssl_errors();
    return nullptr;
  }
  if (!common_setup(ctx.get(), why)) return nullptr;
  SSL_CTX_set_alpn_select_cb(ctx.get(), select_alpn, nullptr);
  return ctx;
}

// A key that is not the certificate's would fail every handshake with a confusing error, so it is refused at load
// time. OpenSSL already compares them when the key is set ("key values mismatch"); say it in plain words.
std::string key_error(const std::string& cert_name, const std::string& key_name) {
  std::string reasons = take_openssl_errors();
  if (reasons.find("key values mismatch") != std::string::npos)
    return key_name + ": the private key does not match the certificate " + cert_name;
  return key_name + ": cannot load the private key: " + reasons;
}

// "[::1]" -> "::1", so hosts taken from URLs work as they are.
std::string strip_brackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') return host.substr(1, host.size() - 2);
  return host;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Drains the error queue into words; *verify_failed tells whether one of them was the certificate check.
std::string collect_errors(bool* verify_failed) {
  std::string out;
  while (unsigned long code = ERR_get_error()) {
    if (ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED)
      *verify_failed = true;
    const char* reason = ERR_reason_error_string(code);
    std::string text;
    if (reason) {
      text = reason;
    } else {
      // Some codes (system errors among them) have no reason string; the full form still identifies them.
      char buf[256];
      ERR_error_string_n(code, buf, sizeof(buf));
      text = buf;
    }
    if (out.find(text) != std::string::npos) continue;  // OpenSSL often queues the same reason at several levels
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

}  // namespace

std::string take_openssl_errors() {
  bool ignored = false;
  return collect_errors(&ignored);
}

std::shared_ptr<SSL_CTX> make_client_ctx(const ClientOptions& opts, std::string* why) {
  ERR_clear_error();
  auto ctx = wrap(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    *why = "cannot create a TLS client context: " + take_openssl_errors();
    return nullptr;
  }
  if (!common_setup(ctx.get(), why)) return nullptr;
  // A missing system store is not an error here: with ca_file alone, or verify off, it is not needed, and
  // when it is, the handshake's verify error says so.
  SSL_CTX_set_default_verify_paths(ctx.get());
  ERR_clear_error();
  if (!opts.ca_file.empty() && SSL_CTX_load_verify_file(ctx.get(), opts.ca_file.c_str()) != 1) {
    std::string reason = take_openssl_errors();
    *why = opts.ca_file + ": cannot load CA certificates" + (reason.empty() ? "" : ": " + reason);
    return nullptr;
  }
  // Note the inverted convention: 0 is success for this one.
  if (SSL_CTX_set_alpn_protos(ctx.get(), kAlpnHttp11, sizeof(kAlpnHttp11)) != 0) {
    *why = "cannot set ALPN: " + take_openssl_errors();
    return nullptr;
  }
  SSL_CTX_set_verify(ctx.get(), opts.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  return ctx;
}

std::shared_ptr<SSL_CTX> make_server_ctx(const std::string& cert_path, const std::string& key_path, std::string* why) {
  ERR_clear_error();
  auto ctx = new_server_ctx(why);
  if (!ctx) return nullptr;
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_path.c_str()) != 1) {
    *why = cert_path + ": cannot load the certificate: " + take_openssl_errors();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    *why = key_error(cert_path, key_path);
    return nullptr;
  }
  return ctx;
}

std::shared_ptr<SSL_CTX> make_server_ctx_from_pem(std::string_view cert_pem, std::string_view key_pem,
                                                  std::string* why) {
  ERR_clear_error();
  auto ctx = new_server_ctx(why);
  if (!ctx) return nullptr;
  if (cert_pem.size() > INT_MAX || key_pem.size() > INT_MAX) {
    *why = "PEM text too large";
    return nullptr;
  }
  std::unique_ptr<BIO, BioFree> cbio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  std::unique_ptr<X509, X509Free> leaf(cbio ? PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!leaf || SSL_CTX_use_certificate(ctx.get(), leaf.get()) != 1) {
    *why = "certificate PEM: cannot load the certificate: " + take_openssl_errors();
    return nullptr;
  }
  // Whatever follows the leaf is its chain, as in a chain file.
  while (X509* extra = PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr)) {
    if (SSL_CTX_add0_chain_cert(ctx.get(), extra) != 1) {  // takes ownership on success only
      X509_free(extra);
      *why = "certificate PEM: cannot add a chain certificate: " + take_openssl_errors();
      return nullptr;
    }
  }
  ERR_clear_error();  // the loop above ends on a "no start line" error, which is the normal end of the text
  std::unique_ptr<BIO, BioFree> kbio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  std::unique_ptr<EVP_PKEY, PkeyFree> key(kbio ? PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr)
                                               : nullptr);
  if (!key || SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 || SSL_CTX_check_private_key(ctx.get()) != 1) {
    *why = key_error("PEM", "key PEM");
    return nullptr;
  }
  return ctx;
}

// ---------------------------------------------------------------- Engine

Engine::Engine(SSL_CTX* ctx, bool is_client) {
  ERR_clear_error();
  ssl_ = SSL_new(ctx);
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  if (!ssl_ || !rbio_ || !wbio_) {
    BIO_free(rbio_);
    BIO_free(wbio_);
    rbio_ = wbio_ = nullptr;
    set_failed("cannot create a TLS connection: " + take_openssl_errors());
    return;
  }
  // An empty memory BIO must read as "retry later", not EOF: more ciphertext may come from the socket. -1 is
  // the default for BIO_s_mem; set it anyway since the whole engine depends on it.
  BIO_set_mem_eof_return(rbio_, -1);
  SSL_set_bio(ssl_, rbio_, wbio_);  // ssl_ owns both from here on
  if (is_client) {
    SSL_set_connect_state(ssl_);
  } else {
    SSL_set_accept_state(ssl_);
  }
}

Engine::~Engine() {
  if (ssl_) SSL_free(ssl_);
}

std::unique_ptr<Engine> Engine::client(SSL_CTX* ctx, const std::string& sni_host, bool verify) {
  std::unique_ptr<Engine> e(new Engine(ctx, true));
  if (e->failed_) return e;
  std::string host = strip_brackets(sni_host);
  bool ip = is_ip_literal(host);
  // RFC 6066 forbids IP literals in SNI.
  if (!host.empty() && !ip && SSL_set_tlsext_host_name(e->ssl_, host.c_str()) != 1) {
    e->set_failed("cannot set SNI '" + host + "': " + take_openssl_errors());
    return e;
  }
  e->verify_ = verify;
  SSL_set_verify(e->ssl_, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (verify && !host.empty()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(e->ssl_);
    // "*.example.com" may match "a.example.com", but never "a*.example.com": partial wildcards are a known trap.
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok =
        ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    if (ok != 1) {
      e->set_failed("cannot verify against host '" + host + "': " + take_openssl_errors());
      return e;
    }
  }
  return e;
}

std::unique_ptr<Engine> Engine::server(SSL_CTX* ctx) { return std::unique_ptr<Engine>(new Engine(ctx, false)); }

void Engine::set_failed(std::string why) {
  failed_ = true;
  if (error_.empty()) error_ = std::move(why);
}

// Turns the OpenSSL state after a failed call into words. A failed certificate check is reported by OpenSSL as
// a bare "certificate verify failed"; the verify result says which check failed, which is what users need.
bool Engine::fail(const char* what, int ssl_error) {
  bool verify_failed = false;
  std::string reasons = collect_errors(&verify_failed);
  long vr = SSL_get_verify_result(ssl_);
  // The verify result alone is not enough: OpenSSL records it even with verification off.
  if (vr != X509_V_OK && (verify_failed || (verify_ && reasons.empty()))) {
    set_failed(std::string("certificate verify failed: ") + X509_verify_cert_error_string(vr));
    return false;
  }
  if (reasons.empty()) {
    // SSL_ERROR_SYSCALL with memory BIOs and an empty queue means OpenSSL gave up without a reason.
    reasons = ssl_error == SSL_ERROR_SYSCALL ? "unexpected end of the connection"
                                             : "OpenSSL error " + std::to_string(ssl_error);
  }
  set_failed(std::string(what) + ": " + reasons);
  return false;
}

void Engine::start() {
  if (failed_ || started_) return;
  started_ = true;
  advance();
}

bool Engine::advance() {
  started_ = true;
  if (failed_) return false;
  if (!handshake_done_) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r != 1) {
      int e = SSL_get_error(ssl_, r);
      // WANT_READ: waiting for the peer's next flight. WANT_WRITE cannot happen with a growing memory BIO, but
      // would mean the same: try again on the next call.
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
      return fail("TLS handshake failed", e);
    }
    handshake_done_ = true;
  }
  if (!flush_pending()) return false;
  if (shutdown_requested_ && !shutdown_sent_ && pending_off_ == pending_.size()) {
    ERR_clear_error();
    // 0 means "sent, peer's not yet received", 1 "both done": either way ours is in the output.
    int r = SSL_shutdown(ssl_);
    if (r < 0) {
      int e = SSL_get_error(ssl_, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return fail("TLS shutdown failed", e);
    }
    shutdown_sent_ = true;
  }
  return true;
}

bool Engine::flush_pending() {
  while (pending_off_ < pending_.size()) {
    ERR_clear_error();
    size_t n = 0;
    int r = SSL_write_ex(ssl_, pending_.data() + pending_off_, pending_.size() - pending_off_, &n);
    if (r != 1) {
      int e = SSL_get_error(ssl_, r);
      // Only a post-handshake message the engine must read first could cause this; feed() retries.
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
      return fail("TLS write failed", e);
    }
    pending_off_ += n;  // with partial writes, one record (16 KiB) at a time
  }
  pending_.clear();
  pending_off_ = 0;
  return true;
}

bool Engine::read_all(std::string* plain) {
  char buf[kReadChunk];
  while (!peer_closed_) {
    ERR_clear_error();
    size_t n = 0;
    int r = SSL_read_ex(ssl_, buf, sizeof(buf), &n);
    if (r == 1) {
      plain->append(buf, n);
      continue;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;  // the input holds no whole record
    if (e == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return true;
    }
    return fail("TLS read failed", e);
  }
  return true;
}

bool Engine::feed(std::string_view cipher, std::string* plain) {
  if (failed_) return false;
  while (!cipher.empty()) {
    // BIO_write takes an int; a memory BIO accepts everything, so only the size limit splits the input.
    int chunk = static_cast<int>(std::min<size_t>(cipher.size(), INT_MAX));
    int w = BIO_write(rbio_, cipher.data(), chunk);
    if (w <= 0) {
      set_failed("TLS: cannot buffer input: " + take_openssl_errors());
      return false;
    }
    cipher.remove_prefix(static_cast<size_t>(w));
  }
  if (!advance()) return false;
  if (!handshake_done_) return true;
  if (!read_all(plain)) return false;
  // Reading may have consumed what a stalled write was waiting for.
  return advance();
}

bool Engine::write(std::string_view plain) {
  if (failed_) return false;
  if (shutdown_requested_) return false;  // a caller's mistake, not a TLS failure: the engine stays usable
  if (plain.empty()) return true;         // SSL_write of nothing is an error in OpenSSL, and means nothing
  // Everything goes through pending_ so bytes keep their order with what is still waiting for the handshake.
  if (pending_off_ == pending_.size()) {
    pending_.clear();
    pending_off_ = 0;
  }
  pending_.append(plain);
  if (!handshake_done_) return true;
  return flush_pending();
}

void Engine::shutdown() {
  if (failed_ || shutdown_requested_) return;
  shutdown_requested_ = true;
  // Before the handshake completes there is no session to close: advance() sends it once there is.
  if (handshake_done_) advance();
}

std::string Engine::take_output() {
  std::string out;
  if (!wbio_) return out;
  size_t pending = BIO_ctrl_pending(wbio_);
  if (pending == 0) return out;
  out.resize(pending);
  size_t got = 0;
  if (BIO_read_ex(wbio_, out.data(), pending, &got) != 1) got = 0;
  out.resize(got);
  return out;
}

bool Engine::has_output() const { return wbio_ && BIO_ctrl_pending(wbio_) > 0; }

std::string Engine::alpn() const {
  if (!ssl_) return "";
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &data, &len);
  return data ? std::string(reinterpret_cast<const char*>(data), len) : std::string();
}

std::string Engine::version() const { return ssl_ && handshake_done_ ? SSL_get_version(ssl_) : ""; }

}  // namespace faultline::proxy::tls
