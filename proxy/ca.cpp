#include "proxy/ca.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "proxy/tls.h"

namespace faultline::proxy::ca {

namespace {

namespace fs = std::filesystem;

constexpr const char* kCaCommonName = "faultline local CA";
constexpr long kHour = 3600;
constexpr int kCaDays = 3650;  // 10 years: created once per machine, re-created with --force
// Apple platforms reject server certificates valid for longer than 825 days; counted from notBefore.
constexpr int kLeafDays = 825;

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

std::string openssl_reason() {
  std::string r = tls::take_openssl_errors();
  return r.empty() ? "unknown OpenSSL error" : r;
}

PkeyPtr new_key(std::string* why) {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) *why = "cannot generate an EC P-256 key: " + openssl_reason();
  return key;
}

// A random positive 128-bit serial. RFC 5280 asks for serials unique per CA; random ones need no state (no .srl
// file) and keep two CAs made with --force from issuing equal serials a browser would confuse. The top bits are
// fixed to 01 so the number is positive and always encodes in 16 octets.
bool set_random_serial(X509* x, std::string* why) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    *why = "cannot draw a random serial: " + openssl_reason();
    return false;
  }
  bytes[0] = static_cast<unsigned char>((bytes[0] & 0x3f) | 0x40);
  BnPtr bn(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x))) {
    *why = "cannot set the serial: " + openssl_reason();
    return false;
  }
  return true;
}

// Validity relative to now; notAfter is counted from notBefore so the total span is exactly `days`.
bool set_validity(X509* x, long not_before_offset, int days, std::string* why) {
  if (!X509_gmtime_adj(X509_getm_notBefore(x), not_before_offset) ||
      !X509_time_adj_ex(X509_getm_notAfter(x), days, not_before_offset, nullptr)) {
    *why = "cannot set the validity: " + openssl_reason();
    return false;
  }
  return true;
}

// One extension written the way openssl.cnf would write it ("critical,CA:TRUE"), for fixed values only: host
// names go through add_san() so they are never parsed as configuration syntax.
bool add_ext(X509* x, X509V3_CTX* ctx, int nid, const char* value, std::string* why) {
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value));
  if (!ext || X509_add_ext(x, ext.get(), -1) != 1) {
    *why = std::string("cannot add ") + OBJ_nid2sn(nid) + " '" + value + "': " + openssl_reason();
    return false;
  }
  return true;
}

bool parse_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Host names as they appear in URLs and listen addresses. Anything else (spaces, '/', '%zone') would make a
// certificate no client matches, so it is refused with a clear message instead.
bool valid_dns_name(const std::string& host) {
  if (host.empty() || host.size() > 253 || host.front() == '.' || host.front() == '-') return false;
  for (char c : host) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool add_san(X509* x, const std::string& host, bool ip, std::string* why) {
  std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>> names(sk_GENERAL_NAME_new_null());
  auto push = [&](int type, ASN1_STRING* value) {
    GENERAL_NAME* gn = value ? GENERAL_NAME_new() : nullptr;
    if (!gn) {
      ASN1_STRING_free(value);
      return false;
    }
    GENERAL_NAME_set0_value(gn, type, value);
    if (sk_GENERAL_NAME_push(names.get(), gn) <= 0) {
      GENERAL_NAME_free(gn);
      return false;
    }
    return true;
  };
  auto dns = [&](const std::string& name) {
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    if (s && ASN1_STRING_set(s, name.data(), static_cast<int>(name.size())) != 1) {
      ASN1_IA5STRING_free(s);
      s = nullptr;
    }
    return push(GEN_DNS, s);
  };
  auto ipadd = [&](const std::string& text) { return push(GEN_IPADD, a2i_IPADDRESS(text.c_str())); };

  bool ok = names != nullptr;
  if (ok) ok = ip ? ipadd(host) : dns(host);
  // Clients reach "localhost" by either loopback address too, and some (Node, Go) verify the address they dialed.
  if (ok && host == "localhost") ok = ipadd("127.0.0.1") && ipadd("::1");
  if (!ok || X509_add1_ext_i2d(x, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    *why = "cannot add subjectAltName for '" + host + "': " + openssl_reason();
    return false;
  }
  return true;
}

// Builds and signs a certificate. issuer/issuer_key null = self-signed.
X509Ptr make_cert(EVP_PKEY* key, const std::string& common_name, X509* issuer, EVP_PKEY* issuer_key, bool is_ca,
                  int days, const std::string& host, bool host_is_ip, std::string* why) {
  X509Ptr x(X509_new());
  if (!x || X509_set_version(x.get(), X509_VERSION_3) != 1) {
    *why = "cannot create a certificate: " + openssl_reason();
    return nullptr;
  }
  if (!set_random_serial(x.get(), why) || !set_validity(x.get(), -kHour, days, why)) return nullptr;
  X509_NAME* name = X509_get_subject_name(x.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("faultline"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                                 -1, -1, 0) != 1 ||
      X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer) : name) != 1 ||
      X509_set_pubkey(x.get(), key) != 1) {
    *why = "cannot fill in the certificate: " + openssl_reason();
    return nullptr;
  }

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : x.get(), x.get(), nullptr, nullptr, 0);
  X509V3_set_ctx_nodb(&ctx);
  // The subject key identifier goes first: the authority key identifier is derived from the issuer's.
  // Python 3.13's strict verification (VERIFY_X509_STRICT) requires both.
  bool ok = add_ext(x.get(), &ctx, NID_subject_key_identifier, "hash", why) &&
            add_ext(x.get(), &ctx, NID_authority_key_identifier, "keyid:always", why);
  if (ok && is_ca) {
    // pathlen:0: this CA signs leaves only, so a leaked leaf key can never act as a CA.
    ok = add_ext(x.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", why) &&
         add_ext(x.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign", why);
  } else if (ok) {
    // ECDSA keys sign the handshake; keyEncipherment is for RSA key transport and would be wrong here.
    ok = add_ext(x.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE", why) &&
         add_ext(x.get(), &ctx, NID_key_usage, "critical,digitalSignature", why) &&
         add_ext(x.get(), &ctx, NID_ext_key_usage, "serverAuth", why) && add_san(x.get(), host, host_is_ip, why);
  }
  if (!ok) return nullptr;
  if (X509_sign(x.get(), issuer_key ? issuer_key : key, EVP_sha256()) <= 0) {
    *why = "cannot sign the certificate: " + openssl_reason();
    return nullptr;
  }
  return x;
}

std::string cert_to_pem(X509* x) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), x) != 1) return "";
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string key_to_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) return "";
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// Writes through a temporary file and a rename, so an interrupted init never leaves half a key, and a replaced
// key file gets `mode` (open() with O_CREAT keeps the mode of a file that already exists).
bool write_file(const std::string& path, const std::string& text, mode_t mode, std::string* why) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    *why = tmp + ": " + std::strerror(errno);
    return false;
  }
  // The umask may only have removed bits; fchmod also fixes a stale temporary file's mode.
  bool ok = ::fchmod(fd, mode) == 0;
  for (size_t off = 0; ok && off < text.size();) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) off += static_cast<size_t>(n);
  }
  int saved = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    *why = path + ": " + std::strerror(saved);
  }
  return ok;
}

bool read_file(const std::string& path, std::string* out, std::string* why) {
  struct Close {
    void operator()(FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<FILE, Close> f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    *why = path + ": " + std::strerror(errno);
    return false;
  }
  char buf[4096];
  out->clear();
  while (size_t n = std::fread(buf, 1, sizeof(buf), f.get())) out->append(buf, n);
  if (std::ferror(f.get())) {
    *why = path + ": read error";
    return false;
  }
  return true;
}

// Loads the CA certificate and key and checks they belong together: minting from a mismatched pair would give
// certificates no client can verify, with an error far from the cause.
bool load_ca(const std::string& dir, X509Ptr* cert, PkeyPtr* key, std::string* why) {
  std::string cpath = cert_path(dir), kpath = key_path(dir), text;
  if (!read_file(cpath, &text, why)) return false;
  BioPtr cbio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  cert->reset(cbio ? PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!*cert) {
    *why = cpath + ": not a PEM certificate: " + openssl_reason();
    return false;
  }
  if (!read_file(kpath, &text, why)) return false;
  BioPtr kbio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  key->reset(kbio ? PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!*key) {
    *why = kpath + ": not an unencrypted PEM private key: " + openssl_reason();
    return false;
  }
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    *why = kpath + ": does not match the certificate " + cpath + " (run 'faultline ca init --force' to renew both)";
    return false;
  }
  return true;
}

}  // namespace

std::string cert_path(const std::string& dir) { return (fs::path(dir) / kCertFile).string(); }
std::string key_path(const std::string& dir) { return (fs::path(dir) / kKeyFile).string(); }

bool exists(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(cert_path(dir), ec) && fs::is_regular_file(key_path(dir), ec);
}

bool init(const std::string& dir, bool force, std::string* why) {
  ERR_clear_error();
  std::string cpath = cert_path(dir), kpath = key_path(dir);
  if (!force) {
    for (const std::string& p : {cpath, kpath}) {
      std::error_code ec;
      if (fs::exists(fs::symlink_status(p, ec))) {
        *why = p + " already exists (--force replaces it, and certificates minted from the old CA stop verifying)";
        return false;
      }
    }
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    *why = dir + ": cannot create the directory: " + ec.message();
    return false;
  }
  PkeyPtr key = new_key(why);
  if (!key) return false;
  X509Ptr cert = make_cert(key.get(), kCaCommonName, nullptr, nullptr, true, kCaDays, "", false, why);
  if (!cert) return false;
  std::string cert_pem = cert_to_pem(cert.get()), key_pem = key_to_pem(key.get());
  if (cert_pem.empty() || key_pem.empty()) {
    *why = "cannot encode the CA as PEM: " + openssl_reason();
    return false;
  }
  // The key first: a certificate without its key would make exists() true for a CA that cannot sign.
  return write_file(kpath, key_pem, 0600, why) && write_file(cpath, cert_pem, 0644, why);
}

bool mint(const std::string& dir, const std::string& host_in, std::string* cert_pem, std::string* key_pem,
          std::string* why) {
  ERR_clear_error();
  std::string host = host_in;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  bool ip = parse_ip(host);
  if (!ip && !valid_dns_name(host)) {
    *why = "cannot mint a certificate for '" + host_in + "': not a host name or IP address";
    return false;
  }
  X509Ptr ca_cert;
  PkeyPtr ca_key;
  if (!load_ca(dir, &ca_cert, &ca_key, why)) return false;
  PkeyPtr key = new_key(why);
  if (!key) return false;
  // CN is limited to 64 characters; the SAN is what clients check, so a long name only loses the CN.
  std::string cn = host.size() <= 64 ? host : "faultline leaf";
  X509Ptr cert = make_cert(key.get(), cn, ca_cert.get(), ca_key.get(), false, kLeafDays, host, ip, why);
  if (!cert) return false;
  *cert_pem = cert_to_pem(cert.get());
  *key_pem = key_to_pem(key.get());
  if (cert_pem->empty() || key_pem->empty()) {
    *why = "cannot encode the certificate as PEM: " + openssl_reason();
    return false;
  }
  return true;
}

}  // namespace faultline::proxy::ca
