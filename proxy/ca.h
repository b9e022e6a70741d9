// faultline's local certificate authority: `faultline ca init` creates it, and listeners with tls = "auto" mint
// their certificates from it, so a user trusts one file (DIR/ca.pem) once instead of one certificate per listener.
#pragma once

#include <string>

namespace faultline::proxy::ca {

// File names inside the CA directory.
inline constexpr const char* kCertFile = "ca.pem";
inline constexpr const char* kKeyFile = "ca.key";

// DIR/ca.pem, DIR/ca.key.
std::string cert_path(const std::string& dir);
std::string key_path(const std::string& dir);

// Creates DIR/ca.pem (self-signed CA cert, CN "faultline local CA", basicConstraints CA:TRUE critical,
// keyUsage keyCertSign+cRLSign, 10 years, EC P-256) and DIR/ca.key (mode 0600). Creates DIR if missing. Refuses to
// overwrite existing files (why says which exists) unless force.
bool init(const std::string& dir, bool force, std::string* why);

// Both files present.
bool exists(const std::string& dir);

// A leaf certificate for `host` (DNS name -> DNS SAN; IPv4/IPv6 literal, bracketed or not -> IP SAN; "localhost"
// also gets the IP SANs 127.0.0.1 and ::1), valid from 1 hour ago for 825 days, serverAuth EKU, EC P-256, signed by
// the CA in dir; returned as PEM text (the leaf only; the key unencrypted PKCS#8). Errors name the file and the
// reason.
bool mint(const std::string& dir, const std::string& host, std::string* cert_pem, std::string* key_pem,
          std::string* why);

}  // namespace faultline::proxy::ca
