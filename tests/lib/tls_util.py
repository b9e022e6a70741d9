"""TLS helpers for the e2e tests: certificates minted with the openssl command line into a temp dir
at test time (never committed, never reused), and a stand-in OpenAI API served over TLS."""
import os
import ssl
import subprocess
import sys

from fake_openai import FakeOpenAI


def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


def _san(hosts):
    parts = []
    for h in hosts:
        is_ip = h.replace(".", "").isdigit() or ":" in h
        parts.append(("IP:" if is_ip else "DNS:") + h)
    return ",".join(parts)


def self_signed_cert(directory, name="server", hosts=("localhost", "127.0.0.1"), days=2):
    """A self-signed EC P-256 certificate for `hosts` (subjectAltName); it is its own CA, so a
    client that trusts the .pem file verifies the server. Returns (cert_path, key_path)."""
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={hosts[0]}",
             "-addext", f"subjectAltName={_san(hosts)}",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0")
    os.chmod(key, 0o600)
    return cert, key


def leaf_signed_by(directory, ca_cert, ca_key, name="leaf", hosts=("localhost", "127.0.0.1"), days=2):
    """A server certificate for `hosts` signed by the CA (ca_cert, ca_key): a key and CSR from
    `openssl req`, signed with `openssl x509 -req`. Returns (cert_path, key_path)."""
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    csr = os.path.join(directory, f"{name}.csr")
    ext = os.path.join(directory, f"{name}.ext")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={hosts[0]}")
    os.chmod(key, 0o600)
    with open(ext, "w", encoding="utf-8") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid:always\n"
                f"subjectAltName={_san(hosts)}\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", str(days), "-sha256", "-extfile", ext)
    return cert, key


class TlsFakeOpenAI(FakeOpenAI):
    """FakeOpenAI served over TLS with (cert, key) on 127.0.0.1; .port, .requests, .base_url
    (https://localhost:PORT/v1). A failed handshake (a client that does not trust the cert)
    only drops that connection and is kept in .tls_errors (its text)."""

    def __init__(self, cert, key, **kwargs):
        super().__init__(**kwargs)
        self.tls_errors = []
        self._server.handle_error = self._handle_error
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        # The handshake runs in the per-connection thread (first read), not in accept(), so a client
        # that never completes it cannot block the server.
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True,
                                              do_handshake_on_connect=False)

    def _handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (ssl.SSLError, ConnectionError)):
            with self._lock:
                self.tls_errors.append(str(err))
        else:
            type(self._server).handle_error(self._server, request, client_address)

    @property
    def base_url(self):
        return f"https://localhost:{self.port}/v1"
