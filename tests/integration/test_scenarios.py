"""Loading scenarios: `check`, errors that name FILE:LINE with exit 2, the sandbox, bad options."""

import os
import re
import shutil
import socket
import tempfile
import unittest

from faultline_testlib import FAULTLINE_BIN, run_check, run_faultline

GOOD = """\
seed(42)
local orders = proxy { name = "orders", listen = "127.0.0.1:0", upstream = "127.0.0.1:5432", protocol = "tcp" }
orders:toxic { type = "latency", stream = "downstream", latency = 100, jitter = 10 }
orders:toxic { name = "cut", type = "limit_data", stream = "upstream", attributes = { bytes = 1000 } }
local cache = proxy { name = "cache", listen = "127.0.0.1:0", upstream = "127.0.0.1:6379" }
cache:toxic { type = "bandwidth", stream = "downstream", rate = 100, toxicity = 0.5 }
expect { toxic = "latency_downstream", fired = 1 }
"""

PROXY = 'local p = proxy { name = "p", listen = "127.0.0.1:0", upstream = "127.0.0.1:9" }\n'


class ScenarioTest(unittest.TestCase):

    def assert_error_at(self, scenario, line, *words, filename="bad.lua"):
        """check and the run form both reject scenario with exit 2 and 'bad.lua:LINE:'."""
        for form in ("check", "run"):
            with self.subTest(form=form):
                if form == "check":
                    result, name = run_check(scenario, filename=filename)
                else:
                    result, name = self.run_scenario(scenario, filename)
                self.assertEqual(result.returncode, 2,
                                 f"exit code; stderr:\n{result.stderr}")
                self.assertRegex(result.stderr, re.escape(f"{name}:{line}:"),
                                 "the error does not name FILE:LINE")
                for w in words:
                    self.assertIn(w.lower(), result.stderr.lower(), "the error does not say what is wrong")
                self.assertNotIn("faultline ready", result.stderr, "it started anyway")

    def run_scenario(self, scenario, filename):
        tmpdir = tempfile.mkdtemp(prefix="faultline-run-")
        self.addCleanup(shutil.rmtree, tmpdir, True)
        with open(os.path.join(tmpdir, filename), "w", encoding="utf-8") as f:
            f.write(scenario)
        return run_faultline([filename], timeout=10, cwd=tmpdir), filename

    # ---------------------------------------------------------------- check

    def test_check_accepts_a_good_scenario_and_prints_its_proxies(self):
        result, _ = run_check(GOOD)
        self.assertEqual(result.returncode, 0, f"stderr:\n{result.stderr}")
        self.assertIn("orders", result.stdout)
        self.assertIn("cache", result.stdout)

    def test_check_lists_the_toxics_it_would_run(self):
        result, _ = run_check(GOOD)
        self.assertEqual(result.returncode, 0, f"stderr:\n{result.stderr}")
        self.assertIn("latency_downstream", result.stdout)
        self.assertIn("cut", result.stdout)
        self.assertIn("bandwidth_downstream", result.stdout)

    def test_check_does_not_listen_on_the_scenarios_ports(self):
        # A port we hold: a check that tried to bind it would fail.
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen(1)
            port = held.getsockname()[1]
            scenario = GOOD.replace('listen = "127.0.0.1:0", upstream = "127.0.0.1:5432"',
                                    f'listen = "127.0.0.1:{port}", upstream = "127.0.0.1:5432"')
            self.assertIn(str(port), scenario)
            result, _ = run_check(scenario)
        self.assertEqual(result.returncode, 0, f"stderr:\n{result.stderr}")

    # ---------------------------------------------------------------- errors with FILE:LINE

    def test_a_syntax_error_names_its_file_and_line(self):
        self.assert_error_at("seed(1)\n\nlocal x = = 1\n", 3)

    def test_an_unknown_toxic_type_names_its_line_and_the_type(self):
        self.assert_error_at(PROXY + "\n" + 'p:toxic { type = "latncy", stream = "downstream" }\n',
                             3, "latncy")

    def test_a_proxy_without_an_upstream_names_its_line_and_the_missing_field(self):
        self.assert_error_at('seed(1)\nlocal p = proxy { name = "p", listen = "127.0.0.1:0" }\n',
                             2, "upstream")

    def test_a_toxic_without_a_type_names_its_line(self):
        self.assert_error_at(PROXY + 'p:toxic { stream = "downstream", latency = 5 }\n', 2, "type")

    def test_a_bad_listen_address_names_its_line_and_the_address(self):
        self.assert_error_at('seed(1)\n\n\nlocal p = proxy { name = "p", listen = "127.0.0.1:http-ish", '
                             'upstream = "127.0.0.1:9" }\n', 4, "127.0.0.1:http-ish")

    def test_a_listen_port_out_of_range_is_an_error(self):
        self.assert_error_at('local p = proxy { name = "p", listen = "127.0.0.1:70000", '
                             'upstream = "127.0.0.1:9" }\n', 1, "70000")

    def test_an_unknown_proxy_field_names_its_line_and_the_field(self):
        self.assert_error_at('seed(1)\nlocal p = proxy { name = "p", listen = "127.0.0.1:0", '
                             'upstream = "127.0.0.1:9", protocl = "tcp" }\n', 2, "protocl")

    def test_an_unknown_toxic_attribute_names_its_line_and_the_attribute(self):
        self.assert_error_at(PROXY + 'p:toxic { type = "latency", stream = "downstream", latncy = 5 }\n',
                             2, "latncy")

    def test_an_unknown_stream_names_its_line(self):
        self.assert_error_at(PROXY + 'p:toxic { type = "latency", stream = "sideways", latency = 5 }\n',
                             2, "sideways")

    def test_a_toxicity_above_one_is_an_error(self):
        self.assert_error_at(PROXY + 'p:toxic { type = "latency", latency = 5, toxicity = 1.5 }\n', 2)

    def test_two_proxies_with_one_name_are_an_error(self):
        self.assert_error_at(PROXY + 'local q = proxy { name = "p", listen = "127.0.0.1:0", '
                             'upstream = "127.0.0.1:9" }\n', 2, "p")

    def test_a_runtime_error_in_the_scenario_names_its_line(self):
        self.assert_error_at('seed(1)\nlocal t = nil\nlocal x = t.field\n', 3)

    # ---------------------------------------------------------------- the sandbox

    def test_the_sandbox_refuses_os_execute(self):
        marker = os.path.join(tempfile.gettempdir(), f"faultline-sandbox-{os.getpid()}")
        self.addCleanup(lambda: os.path.exists(marker) and os.remove(marker))
        self.assert_error_at(f'seed(1)\nos.execute("touch {marker}")\n', 2)
        self.assertFalse(os.path.exists(marker), "os.execute ran a command")

    def test_the_sandbox_refuses_io_open(self):
        self.assert_error_at('seed(1)\n\nlocal f = io.open("/etc/passwd")\n', 3)

    def test_the_sandbox_refuses_require(self):
        self.assert_error_at('local m = require("os")\n', 1)

    def test_the_sandbox_has_no_debug_library(self):
        self.assert_error_at('seed(1)\ndebug.sethook(function() end, "l")\n', 2)

    def test_the_sandbox_refuses_os_exit(self):
        self.assert_error_at('seed(1)\nos.exit(0)\n', 2)

    def test_the_sandbox_refuses_dofile(self):
        self.assert_error_at('dofile("/etc/passwd")\n', 1)

    # ---------------------------------------------------------------- command line

    def test_a_nonexistent_scenario_file_exits_2_naming_the_file(self):
        missing = "/nonexistent/dir/no-such-scenario.lua"
        for args in (["check", missing], [missing]):
            with self.subTest(args=args):
                result = run_faultline(args, timeout=10)
                self.assertEqual(result.returncode, 2, f"stderr:\n{result.stderr}")
                self.assertIn("no-such-scenario.lua", result.stderr)

    def test_an_unknown_option_exits_2(self):
        tmpdir = tempfile.mkdtemp(prefix="faultline-opt-")
        self.addCleanup(shutil.rmtree, tmpdir, True)
        path = os.path.join(tmpdir, "good.lua")
        with open(path, "w", encoding="utf-8") as f:
            f.write(GOOD)
        result = run_faultline([path, "--no-such-option"], timeout=10)
        self.assertEqual(result.returncode, 2, f"stderr:\n{result.stderr}")
        self.assertIn("--no-such-option", result.stderr)
        self.assertNotIn("faultline ready", result.stderr)

    def test_a_bad_log_level_exits_2(self):
        tmpdir = tempfile.mkdtemp(prefix="faultline-opt-")
        self.addCleanup(shutil.rmtree, tmpdir, True)
        path = os.path.join(tmpdir, "good.lua")
        with open(path, "w", encoding="utf-8") as f:
            f.write(GOOD)
        result = run_faultline([path, "--log-level", "loud"], timeout=10)
        self.assertEqual(result.returncode, 2, f"stderr:\n{result.stderr}")

    def test_no_arguments_at_all_exits_2(self):
        result = run_faultline([], timeout=10)
        self.assertEqual(result.returncode, 2, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")

    def test_the_binary_under_test_exists(self):
        self.assertTrue(os.access(FAULTLINE_BIN, os.X_OK), f"{FAULTLINE_BIN} is not executable")


if __name__ == "__main__":
    unittest.main(verbosity=2)
