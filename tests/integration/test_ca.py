"""`faultline ca init`: the local CA's files, their modes, refusing to overwrite, --force, usage errors."""

import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from faultline_testlib import run_faultline


def file_mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path):
    with open(path, encoding="ascii") as f:
        return f.read()


class CaInitTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="faultline-ca-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.dir = os.path.join(self.tmp, "ca")
        self.pem = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")

    def init(self, *extra, cwd=None):
        return run_faultline(["ca", "init", *extra], cwd=cwd)

    def test_init_creates_a_ca_certificate_and_a_private_key(self):
        result = self.init("--dir", self.dir)
        self.assertEqual(result.returncode, 0, f"stderr:\n{result.stderr}")
        self.assertTrue(os.path.isfile(self.pem))
        self.assertTrue(os.path.isfile(self.key))
        self.assertEqual(file_mode(self.key), 0o600, "the private key is readable by others")
        self.assertIn(self.pem, result.stdout)
        self.assertIn(self.key, result.stdout)
        for hint in ("--cacert", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"):
            self.assertIn(hint, result.stdout, "no word on how to trust the CA")
        self.assertIn("BEGIN PRIVATE KEY", read(self.key))

    @unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
    def test_the_certificate_is_a_ca(self):
        self.assertEqual(self.init("--dir", self.dir).returncode, 0)
        text = subprocess.run(["openssl", "x509", "-in", self.pem, "-noout", "-text"],
                              capture_output=True, text=True, check=True).stdout
        self.assertIn("CA:TRUE", text)
        self.assertIn("Certificate Sign", text)
        self.assertIn("CN = faultline local CA", text)
        self.assertIn("prime256v1", text)

    def test_a_second_init_refuses_and_names_the_existing_file(self):
        self.assertEqual(self.init("--dir", self.dir).returncode, 0)
        before = read(self.pem)
        result = self.init("--dir", self.dir)
        self.assertEqual(result.returncode, 1, f"stderr:\n{result.stderr}")
        self.assertIn("faultline ca init:", result.stderr)
        self.assertIn(self.pem, result.stderr)
        self.assertIn("already exists", result.stderr)
        self.assertEqual(read(self.pem), before, "the existing CA was touched")

    def test_force_replaces_the_ca(self):
        self.assertEqual(self.init("--dir", self.dir).returncode, 0)
        before = read(self.pem)
        os.chmod(self.key, 0o644)
        result = self.init("--dir", self.dir, "--force")
        self.assertEqual(result.returncode, 0, f"stderr:\n{result.stderr}")
        self.assertNotEqual(read(self.pem), before)
        self.assertEqual(file_mode(self.key), 0o600)

    def test_the_default_directory_is_certs_in_the_working_directory(self):
        result = self.init(cwd=self.tmp)
        self.assertEqual(result.returncode, 0, f"stderr:\n{result.stderr}")
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "certs", "ca.pem")))
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "certs", "ca.key")))

    def test_a_directory_that_cannot_be_created_exits_1(self):
        blocker = os.path.join(self.tmp, "file")
        with open(blocker, "w", encoding="ascii") as f:
            f.write("not a directory")
        result = self.init("--dir", os.path.join(blocker, "ca"))
        self.assertEqual(result.returncode, 1, f"stderr:\n{result.stderr}")
        self.assertIn("faultline ca init:", result.stderr)
        self.assertIn(blocker, result.stderr)

    def test_usage_errors_exit_2(self):
        for args in (["ca"], ["ca", "init", "--bogus"], ["ca", "nope"]):
            with self.subTest(args=args):
                result = run_faultline(args, cwd=self.tmp)
                self.assertEqual(result.returncode, 2, f"stderr:\n{result.stderr}")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "certs")), "a usage error created files")


if __name__ == "__main__":
    unittest.main()
