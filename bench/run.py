#!/usr/bin/env python3
"""`make bench`: Bonito against the LiteLLM proxy and the bare upstream, on this machine.

An nginx upstream returns canned OpenAI JSON and SSE (it costs far less CPU than either
gateway); wrk (not Python) drives the load. Both gateways run one worker. Prints a
markdown table and writes JSON. `--smoke` is a seconds-long run that keeps the harness
working in CI; its numbers mean nothing.
"""

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
BENCH_BIN = ROOT / ".venv-bench" / "bin"
CHAT = {
    "model": "bench-chat",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
}
STREAM = {**CHAT, "model": "bench-stream", "stream": True}
# The Messages API (/v1/messages): to an Anthropic deployment (passed through) and to the
# OpenAI-shaped one (translated to a chat completion and back).
MESSAGES = {**CHAT, "model": "bench-claude", "max_tokens": 64}
MESSAGES_TRANSLATED = {**MESSAGES, "model": "bench-chat"}
ANTHROPIC_MESSAGE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": "claude-bench",
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 14, "output_tokens": 9},
}
# The Responses API (issue 18): passed through to an `openai` connection, and translated
# to chat completions for an OpenAI-compatible one (bench-chat).
RESPONSES = {"model": "bench-responses", "input": "Say hello in one short sentence."}
RESPONSE = {
    "id": "resp_bench",
    "object": "response",
    "created_at": 1700000000,
    "status": "completed",
    "model": "gpt-4o-mini",
    "output": [
        {
            "type": "message",
            "id": "msg_bench",
            "status": "completed",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": "Hello! How can I help you today?",
                    "annotations": [],
                }
            ],
        }
    ],
    "usage": {"input_tokens": 14, "output_tokens": 9, "total_tokens": 23},
}
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23},
}


def sse_body() -> str:
    chunks = []
    for i, word in enumerate(["Hello!", " How", " can", " I", " help?"]):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        chunks.append(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        )
    chunks.append(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    chunks.append(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19},
        }
    )
    return "".join(f"data: {json.dumps(c)}\\n\\n" for c in chunks) + "data: [DONE]\\n\\n"


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /json/v1/chat/completions {{ default_type application/json; return 200 '{json}'; }}
    location = /json/v1/responses {{ default_type application/json; return 200 '{response}'; }}
    location = /sse/v1/chat/completions {{ default_type text/event-stream; return 200 "{sse}"; }}
    location = /anth/v1/messages {{ default_type application/json; return 200 '{anthropic}'; }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, key: str, timeout=1.0) -> bool:
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status == 200
    except Exception:
        return False


def wait_ok(url, key, timeout=120.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if http_ok(url, key):
            return time.monotonic() - start
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(url, key, body, connections, seconds, threads=None, delay_ms=0.0) -> dict:
    threads = threads or min(2, connections)
    env = {
        **os.environ,
        "BENCH_BODY": json.dumps(body),
        "BENCH_KEY": key,
        "BENCH_DELAY_MS": f"{delay_ms:.3f}",
    }
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "post.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
    }
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["failed"] = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(map(int, errors.groups())) if errors else 0
    )
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    return result


def ttft(url, key, body, runs) -> dict:
    """Time to first byte of a streamed answer, with curl (not Python), one at a time."""
    times, ok = [], 0
    for _ in range(runs):
        out = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_starttransfer}",
                "-X",
                "POST",
                url,
                "-H",
                f"Authorization: Bearer {key}",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(body),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        ok += out[0] == "200"
        times.append(float(out[1]) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[int(len(times) * 0.99) - 1] if len(times) > 1 else times[0],
        "ok": ok,
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
        pids += [int(p) for p in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def h2load(url, key, body, count, tmp: Path) -> dict:
    """Exactly `count` requests at concurrency 32, each completed (unlike wrk's timed runs)."""
    body_file = tmp / "body.json"
    body_file.write_text(json.dumps(body))
    out = subprocess.run(
        [
            "h2load",
            "--h1",
            "-n",
            str(count),
            "-c",
            "32",
            "-t",
            "1",
            "-d",
            str(body_file),
            "-H",
            f"authorization: Bearer {key}",
            "-H",
            "content-type: application/json",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out
    )
    status = re.search(r"status codes: (\d+) 2xx", out)
    return {"done": int(m.group(3)), "ok_2xx": int(status.group(1)) if status else 0}


class Procs:
    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                self.stop(proc)


def start_upstream(procs: "Procs", tmp: Path) -> int:
    """The canned nginx upstream (JSON under /json, SSE under /sse); returns its port."""
    up_port = free_port()
    (tmp / "nginx.conf").write_text(
        NGINX_CONF.format(
            tmp=tmp,
            port=up_port,
            json=json.dumps(COMPLETION),
            response=json.dumps(RESPONSE),
            sse=sse_body().replace('"', '\\"'),
            anthropic=json.dumps(ANTHROPIC_MESSAGE),
        )
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs.start([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], stderr=subprocess.DEVNULL)
    return up_port


def start_litellm(procs: "Procs", tmp: Path, models: dict, master: str) -> tuple:
    """The LiteLLM proxy (from .venv-bench, one worker) serving ``models`` (public name ->
    upstream api_base); returns (port, process) once it answers."""
    ll_port = free_port()
    model_list = [
        {
            "model_name": name,
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_key": "bench-upstream-key",
                "api_base": api_base,
            },
        }
        for name, api_base in models.items()
    ]
    (tmp / "litellm.yaml").write_text(
        json.dumps(
            {
                "model_list": model_list,
                "general_settings": {"master_key": master},
                "litellm_settings": {"set_verbose": False},
            }
        )
    )
    ll_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    ll_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    litellm = procs.start(
        [str(BENCH_BIN / "litellm"), "--config", str(tmp / "litellm.yaml")]
        + ["--host", "127.0.0.1", "--port", str(ll_port), "--num_workers", "1"],
        env=ll_env,
        stdout=open(tmp / "litellm.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    wait_ok(f"http://127.0.0.1:{ll_port}/v1/models", master, timeout=180)
    return ll_port, litellm


def bonito_env(tmp: Path, port: int) -> dict:
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LOG_LEVEL": "WARNING",
        "GATEWAY_SPOOL_DIR": str(tmp / "spool"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "PROVIDER_ALLOWED_NETWORKS": "127.0.0.1/32",  # the benchmark's upstream is local
    }
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bonito_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE bonito_bench")
        env["DATABASE_URL"] = f"{base}/bonito_bench"
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    env.setdefault("REDIS_URL", "")
    return env


def manage(env, *args) -> str:
    return subprocess.run(
        [str(BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


BENCH_CONFIG = """
orgs:
  - slug: bench
    name: Bench
    tier: enterprise
    providers:
      - {{name: nginx, kind: openai_compatible, api_base: "http://127.0.0.1:{port}/json/v1", api_key: bench-upstream-key}}
      - {{name: nginx-sse, kind: openai_compatible, api_base: "http://127.0.0.1:{port}/sse/v1", api_key: bench-upstream-key}}
      - {{name: nginx-anthropic, kind: anthropic, api_base: "http://127.0.0.1:{port}/anth", api_key: bench-upstream-key}}
      - {{name: nginx-openai, kind: openai, api_base: "http://127.0.0.1:{port}/json/v1", api_key: bench-upstream-key}}
    deployments:
      - {{model: bench-chat, provider: nginx, upstream_model: gpt-4o-mini}}
      - {{model: bench-stream, provider: nginx-sse, upstream_model: gpt-4o-mini}}
      - {{model: bench-claude, provider: nginx-anthropic, upstream_model: claude-bench}}
      - {{model: bench-responses, provider: nginx-openai, upstream_model: gpt-4o-mini}}
    policy:
      allowed_models: [bench-chat, bench-stream, bench-claude, bench-responses]
      monthly_spend_cap_usd: 1000000000
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few seconds per step, for CI")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "results.json"))
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="Bonito's RSS marks only (after a 10 s warm-up), for memory experiments",
    )
    parser.add_argument(
        "--streams-only",
        action="store_true",
        help="the streams section alone (bench/streams.py: slow upstream, many concurrent "
        "streams, CPU per chunk); `bench/streams.py --help` has its own options",
    )
    args = parser.parse_args()
    smoke = args.smoke
    if args.streams_only:
        import streams

        res = streams.bench_streams(smoke, args.skip_litellm)
        out = Path(args.out).with_name("streams-smoke.json" if smoke else "streams.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2))
        print(streams.table(res))
        if not res["usage_check"]["ok"]:
            sys.exit("usage rows do not match completed streams: something was dropped")
        return res
    # The smoke run keeps the harness working in CI; its numbers mean nothing.
    secs = 1 if smoke else 10
    rss_marks = (200, 600) if smoke else (10_000, 100_000)
    ttft_runs = 10 if smoke else 200

    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: apt-get install -y nginx-light wrk curl")
    tmp = Path(tempfile.mkdtemp(prefix="bonito-bench-"))
    procs = Procs()
    results: dict = {
        "mode": "smoke" if smoke else "full",
        "machine": os.uname().machine,
        "cpus": os.cpu_count(),
        "database": "postgresql"
        if os.environ.get("DATABASE_URL", "").startswith("postgres")
        else "sqlite",
        "redis": bool(os.environ.get("REDIS_URL")),
        "targets": {},
    }
    try:
        # ---------------------------------------------------------------- upstream
        up_port = start_upstream(procs, tmp)
        time.sleep(0.5)
        direct = f"http://127.0.0.1:{up_port}/json/v1/chat/completions"
        direct_sse = f"http://127.0.0.1:{up_port}/sse/v1/chat/completions"

        # ---------------------------------------------------------------- bonito
        port = free_port()
        env = bonito_env(tmp, port)
        manage(env, "migrate", "--noinput", "-v0")
        (tmp / "bench.yaml").write_text(BENCH_CONFIG.format(port=up_port))
        manage(env, "apply_config", str(tmp / "bench.yaml"))
        key = (
            manage(
                env,
                "create_api_key",
                "--org",
                "bench",
                "--name",
                "bench",
                "--rpm",
                "100000000",
                "--tpm",
                "2000000000",
            )
            .strip()
            .splitlines()[-1]
        )
        started = time.monotonic()
        bonito = procs.start(
            [
                str(BIN / "uvicorn"),
                "bonito.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "on",
                "--no-access-log",
                "--loop",
                "uvloop",
                "--http",
                "gateway.dataplane.http_protocol:HeadDeadlineProtocol",  # as make serve
            ],
            cwd=ROOT,
            env=env,
            stdout=open(tmp / "bonito.log", "w"),
            stderr=subprocess.STDOUT,
        )  # noqa: SIM115
        wait_ok(f"http://127.0.0.1:{port}/v1/models", key)
        results["bonito_cold_start_s"] = round(time.monotonic() - started, 3)
        procs.stop(bonito)
        # The measured server is started the production way: make serve, one worker.
        bonito = procs.start(
            ["make", "-s", "serve"],
            cwd=ROOT,
            env=env,
            stdout=open(tmp / "bonito.log", "a"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_ok(f"http://127.0.0.1:{port}/v1/models", key)
        bonito_url = f"http://127.0.0.1:{port}/v1/chat/completions"

        # ---------------------------------------------------------------- litellm
        targets = {
            "upstream": (direct, direct_sse, "none", None),
            "bonito": (bonito_url, bonito_url, key, bonito),
        }
        if not args.skip_litellm and not args.memory_only:
            if not (BENCH_BIN / "litellm").exists():
                sys.exit("The LiteLLM proxy is missing: make bench installs it into .venv-bench")
            master = "sk-" + secrets.token_urlsafe(32)
            started = time.monotonic()
            ll_port, litellm = start_litellm(
                procs,
                tmp,
                {
                    "bench-chat": f"http://127.0.0.1:{up_port}/json/v1",
                    "bench-stream": f"http://127.0.0.1:{up_port}/sse/v1",
                },
                master,
            )
            results["litellm_cold_start_s"] = round(time.monotonic() - started, 3)
            ll_url = f"http://127.0.0.1:{ll_port}/v1/chat/completions"
            targets["litellm"] = (ll_url, ll_url, master, litellm)

        # ---------------------------------------------------------------- measure
        if args.memory_only:
            del targets["upstream"]
            wrk(bonito_url, key, CHAT, 32, secs)  # warm-up, as the full run's steps are
        for name, (url, _sse_url, k, _proc) in targets.items():
            if args.memory_only:
                break
            body = CHAT if name != "upstream" else {**CHAT, "model": "gpt-4o-mini"}
            wrk(url, k, body, 4, 1)  # warm-up
            c1 = wrk(url, k, body, 1, secs, threads=1)
            c32 = wrk(url, k, body, 32, secs)
            results["targets"][name] = {"c1": c1, "c32": c32}
        if not args.memory_only:
            results["messages"] = bench_messages(
                f"http://127.0.0.1:{up_port}/anth/v1/messages",
                f"http://127.0.0.1:{port}/v1/messages",
                key,
                secs,
            )
            # The Responses API at c=1 against the same upstream: passed through (its own
            # canned response) and translated (to the canned chat completion).
            responses_url = bonito_url.replace("/chat/completions", "/responses")
            up_responses = direct.replace("/chat/completions", "/responses")
            wrk(responses_url, key, RESPONSES, 4, 1)  # warm-up
            results["responses"] = {
                "upstream": wrk(up_responses, "none", RESPONSES, 1, secs, threads=1),
                "passthrough": wrk(responses_url, key, RESPONSES, 1, secs, threads=1),
                "translated": wrk(
                    responses_url, key, {**RESPONSES, "model": "bench-chat"}, 1, secs, threads=1
                ),
            }
            if any(v["failed"] for v in results["responses"].values()):
                sys.exit(f"Responses API requests failed: {results['responses']}")
        bonito_max = results["targets"].get("bonito", {}).get("c32", {}).get("rps", 0)
        rate = 0.6 * bonito_max
        results["fixed_rate_rps"] = round(rate, 1)
        for name, (url, sse_url, k, _proc) in targets.items():
            if args.memory_only:
                break
            body = CHAT if name != "upstream" else {**CHAT, "model": "gpt-4o-mini"}
            p50 = results["targets"][name]["c1"]["p50_ms"] or 1.0
            delay = max(0.0, 8 * 1000 / rate - p50)
            results["targets"][name]["fixed"] = wrk(
                url, k, body, 8, secs, threads=2, delay_ms=delay
            )
            sbody = STREAM if name != "upstream" else {**STREAM, "model": "gpt-4o-mini"}
            results["targets"][name]["ttft"] = ttft(sse_url, k, sbody, ttft_runs)
        # ---------------------------------------------------------------- the journal's cost
        # The same server with the usage journal off, on the same database, measured in
        # alternation with the one above so that the machine's drift falls on both.
        if not args.memory_only:
            nj_port = free_port()
            nj_env = {**env, "PORT": str(nj_port), "GATEWAY_USAGE_JOURNAL": "0"}
            nj_env["GATEWAY_SPOOL_DIR"] = str(tmp / "spool-nojournal")
            no_journal = procs.start(
                ["make", "-s", "serve"],
                cwd=ROOT,
                env=nj_env,
                stdout=open(tmp / "bonito-nojournal.log", "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            nj_url = f"http://127.0.0.1:{nj_port}/v1/chat/completions"
            wait_ok(f"http://127.0.0.1:{nj_port}/v1/models", key)
            wrk(nj_url, key, CHAT, 4, 1)  # warm-up
            runs = {"journal": [], "no_journal": []}
            for _ in range(1 if smoke else 3):
                runs["journal"].append(wrk(bonito_url, key, CHAT, 32, secs)["rps"])
                runs["no_journal"].append(wrk(nj_url, key, CHAT, 32, secs)["rps"])
            procs.stop(no_journal)
            with_j, without_j = (
                statistics.median(runs["journal"]),
                statistics.median(runs["no_journal"]),
            )
            results["journal_cost"] = {
                "rps_with_journal": round(with_j, 1),
                "rps_without_journal": round(without_j, 1),
                "cost_pct": round(100 * (1 - with_j / without_j), 2) if without_j else None,
                "runs": runs,
            }
        # ---------------------------------------------------------------- memory, and nothing dropped
        count_rows = (
            "from billing.models import UsageRecord as U;"
            "print(U.objects.filter(status='success', endpoint='chat').count())"
        )
        time.sleep(2.0)
        rows_before = int(manage(env, "shell", "-c", count_rows).strip().splitlines()[-1])
        bonito_ok = 0
        for name in ("bonito", "litellm"):
            if name not in targets:
                continue
            url, _sse, k, proc = targets[name]
            marks, sent = {}, 0
            results["targets"].setdefault(name, {})
            for mark in rss_marks:
                r = h2load(url, k, CHAT, mark - sent, tmp)
                sent = mark
                if name == "bonito":
                    bonito_ok += r["ok_2xx"]
                time.sleep(1.0)  # settled: background work of the last requests done
                marks[str(mark)] = round(rss_mb(proc.pid), 1)
            results["targets"][name]["rss_mb"] = marks
        deadline = time.monotonic() + 30
        while True:
            rows_after = int(manage(env, "shell", "-c", count_rows).strip().splitlines()[-1])
            if rows_after - rows_before >= bonito_ok or time.monotonic() > deadline:
                break
            time.sleep(1)
        results["usage_check"] = {
            "successful_requests": bonito_ok,
            "new_success_rows": rows_after - rows_before,
            "ok": rows_after - rows_before == bonito_ok,
        }
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if args.memory_only:
        print(json.dumps(results["targets"]["bonito"]["rss_mb"]))
        print(json.dumps(results["usage_check"]))
    else:
        print(table(results))
    print(f"\nJSON: {out}")
    if not results["usage_check"]["ok"]:
        sys.exit("usage rows do not match successful requests: something was dropped")
    return results


def bench_messages(upstream_url: str, bonito_url: str, key: str, secs: int) -> dict:
    """/v1/messages at c=1: the Anthropic-shaped upstream alone, Bonito passing it through,
    and Bonito translating it for the OpenAI-shaped upstream (its own baseline is the chat
    upstream's, measured above)."""
    out = {}
    for name, url, body in (
        ("upstream", upstream_url, {**MESSAGES, "model": "claude-bench"}),
        ("passthrough", bonito_url, MESSAGES),
        ("translated", bonito_url, MESSAGES_TRANSLATED),
    ):
        wrk(url, key, body, 2, 1)  # warm-up
        out[name] = wrk(url, key, body, 1, secs, threads=1)
        if out[name]["failed"]:
            sys.exit(f"/v1/messages ({name}): {out[name]['failed']} requests failed")
    return out


def table(r: dict) -> str:
    t = r["targets"]
    up = t["upstream"]
    names = [n for n in ("bonito", "litellm") if n in t]

    def added(name, section, field):
        value, base = t[name][section][field], up[section][field]
        return f"{value - base:.2f} ms" if value is not None and base is not None else "n/a"

    rows = [
        ("added latency p50, c=1", lambda n: added(n, "c1", "p50_ms")),
        ("added latency p99, c=1", lambda n: added(n, "c1", "p99_ms")),
        ("max requests/s, c=32", lambda n: f"{t[n]['c32']['rps']:.0f}"),
        (
            f"p99 at {r['fixed_rate_rps']:.0f} req/s (60% of Bonito's max)",
            lambda n: (
                f"{t[n]['fixed']['p99_ms']:.2f} ms ({t[n]['fixed']['rps']:.0f} req/s achieved)"
            ),
        ),
        ("added time to first token (stream)", lambda n: added(n, "ttft", "p50_ms")),
    ]
    for mark in next(iter(t[n]["rss_mb"] for n in names)):
        rows.append(
            (f"RSS after {int(mark):,} requests", lambda n, m=mark: f"{t[n]['rss_mb'][m]} MB")
        )
    rows.append(
        ("cold start to first /v1 answer", lambda n: f"{r.get(n + '_cold_start_s', 'n/a')} s")
    )
    m = r.get("messages")
    if m:
        # Bonito only (the LiteLLM proxy's own /v1/messages is not measured here).
        def messages_added(path, n):
            if n != "bonito":
                return "not measured"
            base = m["upstream"] if path == "passthrough" else up["c1"]
            return f"{m[path]['p50_ms'] - base['p50_ms']:.2f} ms"

        rows.append(
            (
                "Messages API added latency p50, c=1 (passed through to Anthropic)",
                lambda n: messages_added("passthrough", n),
            )
        )
        rows.append(
            (
                "Messages API added latency p50, c=1 (translated to chat completions)",
                lambda n: messages_added("translated", n),
            )
        )
        extra_cells = {
            len(rows) - 2: f"{m['upstream']['p50_ms']:.2f} ms",
            len(rows) - 1: f"{up['c1']['p50_ms']:.2f} ms",
        }
    else:
        extra_cells = {}
    lines = [
        "| | " + " | ".join(names) + " | upstream alone |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    upstream_cells = {
        0: f"{up['c1']['p50_ms']:.2f} ms",
        1: f"{up['c1']['p99_ms']:.2f} ms",
        2: f"{up['c32']['rps']:.0f}",
        3: f"{up['fixed']['p99_ms']:.2f} ms",
        4: f"{up['ttft']['p50_ms']:.2f} ms",
        **extra_cells,
    }
    for i, (label, cell) in enumerate(rows):
        lines.append(
            f"| {label} | "
            + " | ".join(cell(n) for n in names)
            + f" | {upstream_cells.get(i, '')} |"
        )
    resp = r.get("responses")
    if resp:
        # Against the upstream's own answer to the same kind of request: its Responses
        # endpoint for the pass-through, its chat endpoint for the translation.
        for label, path, base in (
            ("pass-through", "passthrough", resp["upstream"]),
            ("translated to chat", "translated", up["c1"]),
        ):
            cell = resp[path]
            lines.append(
                f"| Responses API ({label}) added latency p50, c=1 | "
                + " | ".join(
                    f"{cell['p50_ms'] - base['p50_ms']:.2f} ms" if n == "bonito" else "n/a"
                    for n in names
                )
                + f" | {base['p50_ms']:.2f} ms |"
            )
    if "litellm" in t:
        lines.append(
            f"\nBonito/LiteLLM max throughput: {t['bonito']['c32']['rps'] / t['litellm']['c32']['rps']:.2f}x"
        )
    j = r.get("journal_cost")
    if j:
        lines.append(
            f"Usage journal: {j['rps_with_journal']:.0f} req/s with it, "
            f"{j['rps_without_journal']:.0f} without (c=32, median of alternating runs): "
            f"{j['cost_pct']}% cost"
        )
    u = r["usage_check"]
    lines.append(
        f"Usage check: {u['successful_requests']} successful requests (h2load, all completed) -> "
        f"{u['new_success_rows']} usage rows: {'OK' if u['ok'] else 'MISMATCH'}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
