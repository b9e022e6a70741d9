"""TLS through faultline's http proxy, with curl and the official openai SDK (npm): terminating TLS
on the listener (tls = "auto" from a local CA, or a certificate of the user's own) and originating
TLS to an https:// upstream (verified against FAULTLINE_UPSTREAM_CA, or not with tls_verify = false).
Every key and certificate is generated at test time in a temp dir."""
import json
import os
import shutil
import stat
import tempfile
import unittest

from fake_openai import FakeOpenAI
from faultline_testlib import Faultline, curl, run_faultline, wait_until
from sdk_client import CHAT_BODY, sdk_chat
from test_openai_http import http_proxy
from tls_util import TlsFakeOpenAI, leaf_signed_by, self_signed_cert


def post(url, *args):
    """A chat completion request with curl; see faultline_testlib.curl for the result."""
    return curl(url, *args, "-H", "content-type: application/json", "--data-binary", CHAT_BODY, max_time=15)

CURL_VERIFY_FAILED = 60  # CURLE_PEER_FAILED_VERIFICATION


def faultline_env(**extra):
    """The test's environment without faultline's TLS variables, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FAULTLINE_CA_DIR", "FAULTLINE_UPSTREAM_CA")}
    env.update(extra)
    return env


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="faultline-tls-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def start(self, scenario, **env):
        fl = Faultline(scenario, env=faultline_env(**env))
        fl.start()
        self.addCleanup(fl.close)
        return fl


class TlsTerminationTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.api = FakeOpenAI()
        self.api.__enter__()
        self.addCleanup(self.api.__exit__, None, None, None)
        self.upstream = f"http://127.0.0.1:{self.api.port}"
        self.ca_dir = os.path.join(self.tmp, "ca")
        os.mkdir(self.ca_dir)
        self.ca = os.path.join(self.ca_dir, "ca.pem")

    def auto_tls(self, listen):
        fl = self.start(http_proxy("api", self.upstream, listen=listen, extra=', tls = "auto"'),
                        FAULTLINE_CA_DIR=self.ca_dir)
        self.assertTrue(os.path.exists(self.ca), "faultline creates the CA in $FAULTLINE_CA_DIR")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.ca_dir, "ca.key")).st_mode), 0o600)
        return fl

    def test_auto_cert_for_127_0_0_1_verifies_with_the_ca_only(self):
        fl = self.auto_tls("127.0.0.1:0")
        _, port = fl.addr("api")
        url = f"https://127.0.0.1:{port}/v1/chat/completions"

        ok = post(url, "--cacert", self.ca)
        self.assertEqual((ok.exit, ok.status), (0, 200), ok)
        self.assertEqual(ok.json()["choices"][0]["message"]["content"], "Hello from the fake API")

        untrusted = post(url)  # the system roots only
        self.assertEqual(untrusted.exit, CURL_VERIFY_FAILED, untrusted)
        self.assertEqual(untrusted.status, 0, untrusted)

        # The certificate is for the listen host, the IP address: "localhost" is not in it.
        wrong_name = post(f"https://localhost:{port}/v1/chat/completions", "--cacert", self.ca)
        self.assertEqual(wrong_name.exit, CURL_VERIFY_FAILED, wrong_name)

        trusted = sdk_chat(f"https://127.0.0.1:{port}/v1", extra_env={"NODE_EXTRA_CA_CERTS": self.ca})
        self.assertTrue(trusted["ok"], trusted)
        self.assertEqual(trusted["content"], "Hello from the fake API")
        streamed = sdk_chat(f"https://127.0.0.1:{port}/v1", extra_env={"NODE_EXTRA_CA_CERTS": self.ca},
                            STREAM=1)
        self.assertTrue(streamed["ok"], streamed)
        self.assertEqual(streamed["content"], "Hello world")

        refused = sdk_chat(f"https://127.0.0.1:{port}/v1", MAX_RETRIES=0)
        self.assertFalse(refused["ok"], refused)
        self.assertEqual(refused["error"]["name"], "APIConnectionError", refused)

    def test_auto_cert_for_localhost_serves_localhost_and_its_loopback_address(self):
        fl = self.auto_tls("localhost:0")
        _, port = fl.addr("api")
        for host in ("localhost", "127.0.0.1"):
            with self.subTest(host=host):
                r = post(f"https://{host}:{port}/v1/chat/completions", "--cacert", self.ca)
                self.assertEqual((r.exit, r.status), (0, 200), r)
                result = sdk_chat(f"https://{host}:{port}/v1", extra_env={"NODE_EXTRA_CA_CERTS": self.ca})
                self.assertTrue(result["ok"], result)
                self.assertEqual(result["content"], "Hello from the fake API")

    def test_a_certificate_of_ones_own_signed_by_the_faultline_ca(self):
        init = run_faultline(["ca", "init", "--dir", self.ca_dir])
        self.assertEqual(init.returncode, 0, init.stdout + init.stderr)
        ca_key = os.path.join(self.ca_dir, "ca.key")
        self.assertTrue(os.path.exists(self.ca) and os.path.exists(ca_key), init.stdout + init.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(ca_key).st_mode), 0o600)
        again = run_faultline(["ca", "init", "--dir", self.ca_dir])
        self.assertNotEqual(again.returncode, 0, "an existing CA is never overwritten without --force")

        cert, key = leaf_signed_by(self.tmp, self.ca, ca_key, hosts=("localhost", "127.0.0.1"))
        fl = self.start(http_proxy("api", self.upstream,
                                   extra=f', tls = {{ cert = "{cert}", key = "{key}" }}'))
        _, port = fl.addr("api")
        r = post(f"https://localhost:{port}/v1/chat/completions", "--cacert", self.ca)
        self.assertEqual((r.exit, r.status), (0, 200), r)
        untrusted = post(f"https://localhost:{port}/v1/chat/completions")
        self.assertEqual(untrusted.exit, CURL_VERIFY_FAILED, untrusted)
        result = sdk_chat(f"https://localhost:{port}/v1", extra_env={"NODE_EXTRA_CA_CERTS": self.ca})
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["content"], "Hello from the fake API")

    def test_auto_tls_in_front_of_the_mock(self):
        fl = self.start(http_proxy("api", "mock", listen="localhost:0", extra=', tls = "auto"'),
                        FAULTLINE_CA_DIR=self.ca_dir)
        _, port = fl.addr("api")
        result = sdk_chat(f"https://localhost:{port}/v1", extra_env={"NODE_EXTRA_CA_CERTS": self.ca}, STREAM=1)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["content"], "This is a mock response from faultline.")


class TlsOriginationTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.cert, self.key = self_signed_cert(self.tmp, hosts=("localhost", "127.0.0.1"))
        self.api = TlsFakeOpenAI(self.cert, self.key)
        self.api.__enter__()
        self.addCleanup(self.api.__exit__, None, None, None)
        self.upstream = f"https://localhost:{self.api.port}"

    def chat_requests(self):
        return [r for r in self.api.requests if r["path"].startswith("/v1/chat/completions")]

    def test_verified_against_faultline_upstream_ca(self):
        fl = self.start(http_proxy("api", self.upstream), FAULTLINE_UPSTREAM_CA=self.cert)
        host, port = fl.addr("api")
        r = post(f"http://{host}:{port}/v1/chat/completions")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        self.assertEqual(r.json()["choices"][0]["message"]["content"], "Hello from the fake API")
        result = sdk_chat(f"http://{host}:{port}/v1", STREAM=1)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["content"], "Hello world")
        self.assertEqual(len(self.chat_requests()), 2)
        self.assertEqual(self.chat_requests()[0]["headers"]["host"], f"localhost:{self.api.port}")

    def test_an_untrusted_upstream_certificate_is_a_502_naming_verification(self):
        fl = self.start(http_proxy("api", self.upstream))
        host, port = fl.addr("api")
        r = post(f"http://{host}:{port}/v1/chat/completions")
        self.assertEqual((r.exit, r.status), (0, 502), r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        err = r.json()["error"]
        self.assertRegex(err["message"].lower(), r"certificate.*verif|verif.*certificate", err)
        self.assertEqual(set(err), {"message", "type", "param", "code"}, err)
        self.assertEqual(r.header("x-faultline-error"), err["type"], r)
        self.assertEqual(self.chat_requests(), [], "nothing reaches an unverified upstream")
        # faultline refused the handshake; the server sees that alert in its own thread, soon.
        wait_until(lambda: any("unknown ca" in e.lower() for e in self.api.tls_errors), timeout=5,
                   message="an 'unknown ca' alert at the upstream")

        sdk = sdk_chat(f"http://{host}:{port}/v1", MAX_RETRIES=0)
        self.assertFalse(sdk["ok"], sdk)
        self.assertEqual((sdk["error"]["name"], sdk["error"]["status"]), ("InternalServerError", 502), sdk)

    def test_tls_verify_false_accepts_the_untrusted_certificate(self):
        fl = self.start(http_proxy("api", self.upstream, extra=", tls_verify = false"))
        host, port = fl.addr("api")
        r = post(f"http://{host}:{port}/v1/chat/completions")
        self.assertEqual((r.exit, r.status), (0, 200), r)
        result = sdk_chat(f"http://{host}:{port}/v1")
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["content"], "Hello from the fake API")


if __name__ == "__main__":
    unittest.main()
