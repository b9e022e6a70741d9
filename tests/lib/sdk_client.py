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


def curl(url, *args, body=None, timeout=15):
    """curl -sS URL ARGS...; body (str) is POSTed as JSON. Returns a dict: rc (curl's exit code),
    status (int, 0 when no response), headers (dict, lower-case names), body (str), stderr."""
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-D", "-", "-o", "-", *args]
    if body is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", body]
    cmd.append(url)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
    out = r.stdout.decode("utf-8", "replace")
    status, headers, text = 0, {}, out
    # -D - then -o -: every response head (a 100 Continue too), then the body.
    while text.startswith("HTTP/"):
        head, _, text = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return {"rc": r.returncode, "status": status, "headers": headers, "body": text,
            "stderr": r.stderr.decode("utf-8", "replace")}
