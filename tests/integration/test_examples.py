"""Every example scenario loads and validates, and the demo runs end to end."""
import glob
import os
import subprocess
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("FAULTLINE_BIN", os.path.join(ROOT, "build", "faultline"))


class ExamplesTest(unittest.TestCase):
    def test_every_example_scenario_passes_check(self):
        examples = sorted(glob.glob(os.path.join(ROOT, "examples", "*.lua")))
        self.assertGreaterEqual(len(examples), 3)
        for path in examples:
            with self.subTest(example=os.path.basename(path)):
                r = subprocess.run([BIN, "check", path], capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(r.stdout.rstrip().endswith("ok"), r.stdout)
                self.assertIn("proxy '", r.stdout)

    def test_the_demo_shows_latency_and_the_same_resets_in_both_runs(self):
        env = dict(os.environ, FAULTLINE_BIN=BIN)
        r = subprocess.run([os.path.join(ROOT, "scripts", "demo")], capture_output=True, text=True,
                           timeout=120, env=env, cwd=ROOT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        runs = [line for line in r.stdout.splitlines() if ":ok" in line or ":RESET" in line]
        self.assertEqual(len(runs), 2, r.stdout)
        # seed 42, toxicity 0.5: some connections are reset, some are not, identically in both runs
        self.assertIn("RESET", runs[0])
        self.assertIn(":ok", runs[0])
        self.assertEqual(runs[0], runs[1])
        self.assertIn('"toxic":"reset_peer_downstream"', r.stdout)
        latency = [line for line in r.stdout.splitlines() if "through faultline" in line]
        self.assertEqual(len(latency), 1, r.stdout)
        ms = int(latency[0].split(":")[1].split("ms")[0])
        self.assertGreaterEqual(ms, 250)


if __name__ == "__main__":
    unittest.main()
