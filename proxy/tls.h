// A TLS engine over OpenSSL memory BIOs: ciphertext in, plaintext out and the other way round, with no sockets.
// The connection class owns the socket and moves bytes between it and an Engine; keeping TLS free of I/O lets the
// unit tests pump a client and a server engine into each other in memory, split at any byte.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

namespace faultline::proxy::tls {

struct ClientOptions {
  bool verify = true;   // verify the peer against the trust store and the host name
  std::string ca_file;  // extra trusted CA PEM file (tests); empty = system default trust store only
};

// TLS 1.2+, ALPN "http/1.1", system trust store (SSL_CTX_set_default_verify_paths) plus ca_file.
// Null with *why set on failure, naming the file: "tests/ca.pem: cannot load CA certificates: ...".
std::shared_ptr<SSL_CTX> make_client_ctx(const ClientOptions& opts, std::string* why);

// Server context from PEM files, or from PEM text in memory (the certificate first, then any chain certificates).
// TLS 1.2+; the ALPN callback picks http/1.1 when the client offers it, and a client offering no ALPN, or only
// protocols we do not speak, still gets a handshake without ALPN. Errors name the file and OpenSSL's reason.
std::shared_ptr<SSL_CTX> make_server_ctx(const std::string& cert_path, const std::string& key_path, std::string* why);
std::shared_ptr<SSL_CTX> make_server_ctx_from_pem(std::string_view cert_pem, std::string_view key_pem,
                                                  std::string* why);

// Empties OpenSSL's thread-local error queue and returns its reasons joined by "; " ("" if it was empty).
std::string take_openssl_errors();

// One TLS connection. Not thread-safe; one per socket, used on that socket's loop.
class Engine {
 public:
  // sni_host: sent as SNI (skipped when it is an IP literal, which SNI does not allow) and, when verifying, checked
  // against the certificate (DNS name, or IP address for literals; "[::1]" is accepted for "::1").
  // Never null: if OpenSSL cannot set up the connection the engine starts failed and error() says why.
  static std::unique_ptr<Engine> client(SSL_CTX* ctx, const std::string& sni_host, bool verify);
  static std::unique_ptr<Engine> server(SSL_CTX* ctx);

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Ciphertext from the socket, in fragments of any size; appends the decrypted plaintext to *plain. Drives the
  // handshake. Returns false on a fatal TLS error (and from then on); error() then says why, e.g.
  // "certificate verify failed: unable to get local issuer certificate". An alert for the peer may be left in
  // the output: send it before closing.
  bool feed(std::string_view cipher, std::string* plain);
  // Plaintext to send. Before the handshake completes it is buffered and sent once it does. False on error or
  // after shutdown().
  bool write(std::string_view plain);
  // Starts the handshake (clients: produces the ClientHello into the output). Calling it is optional for servers:
  // the first feed() starts the handshake too.
  void start();
  // Queues close_notify (after any buffered plaintext; once the handshake is done if it is not yet). Reading
  // continues: the peer may still send until its own close_notify.
  void shutdown();
  // Ciphertext waiting to go to the socket (handshake messages, records, alerts); empties it.
  std::string take_output();
  bool has_output() const;
  // Plaintext accepted by write() and not yet encrypted (before the handshake completes): it counts toward
  // the connection's backlog, so a stalled handshake pauses the writer instead of growing without bound.
  size_t buffered() const { return pending_.size() - pending_off_; }
  bool handshake_done() const { return handshake_done_; }
  bool peer_closed() const { return peer_closed_; }  // close_notify received
  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }
  std::string alpn() const;     // negotiated protocol, "" if none
  std::string version() const;  // "TLSv1.3", ... once the handshake is done

 private:
  Engine(SSL_CTX* ctx, bool is_client);
  bool advance();        // runs the handshake as far as the input allows
  bool flush_pending();  // writes buffered plaintext once the handshake is done
  bool read_all(std::string* plain);
  bool fail(const char* what, int ssl_error);
  void set_failed(std::string why);

  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // ciphertext from the peer, owned by ssl_
  BIO* wbio_ = nullptr;  // ciphertext for the peer, owned by ssl_
  bool verify_ = false;  // client verifying the server's certificate
  bool started_ = false;
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool failed_ = false;
  bool shutdown_requested_ = false;
  bool shutdown_sent_ = false;
  std::string pending_;     // plaintext accepted by write() but not yet taken by SSL_write
  size_t pending_off_ = 0;  // how much of pending_ is already written (saves moving a large buffer per record)
  std::string error_;
};

}  // namespace faultline::proxy::tls
