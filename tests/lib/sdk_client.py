"""Drives the official openai SDK (tests/e2e/node/chat.mjs) and curl from the e2e tests."""
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.normpath(os.path.join(HERE, "..", "e2e", "node"))


def sdk_chat(base_url, extra_env=None, timeout=60, **env):
    """One chat completion through the SDK; returns what the application saw (chat.mjs's JSON:
    ok, content, chunks, attempts, elapsed_ms, error). env values become environment variables
    of node (STREAM, MAX_RETRIES, TIMEOUT_MS); extra_env too (e.g. NODE_EXTRA_CA_CERTS)."""
    full_env = dict(os.environ, BASE_URL=base_url, **{k: str(v) for k, v in env.items()})
    full_env.pop("NODE_EXTRA_CA_CERTS", None)
    full_env.update(extra_env or {})
    r = subprocess.run(["node", os.path.join(NODE_DIR, "chat.mjs")], capture_output=True, text=True,
                       timeout=timeout, env=full_env, cwd=NODE_DIR)
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"chat.mjs failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


CHAT_BODY = json.dumps({"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]})
