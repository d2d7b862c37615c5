#!/usr/bin/env python3
"""Streams at scale (part of `make bench`; `bench/run.py --streams-only` runs it alone).

A slow streaming upstream (N chunks at a fixed gap, like an LLM generating tokens) in its
own process; many concurrent streams driven by client processes that parse no JSON (they
count events and check each stream ends with `[DONE]`); the same load sent direct to the
upstream, through Bonito (one worker, started as `make serve` starts it) and through the
LiteLLM proxy when it is installed. Bonito's CPU time per chunk comes from
/proc/<pid>/stat (utime + stime) over the run; its RSS is sampled for the peak.
`--baseline ROOT` also runs another checkout's Bonito (e.g. the main branch) in the same
run, so that before/after is a ratio measured together on a shared machine.

Subcommands `upstream` and `client` are the helper processes; without one, it runs all.
STREAMS_PYSPY=/path/to/py-spy records each server's profile during the big runs (raw
format, in the temp folder), as the experiments in docs/benchmarks.md were profiled.
"""

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as base  # noqa: E402 - bench/run.py: processes, ports, Bonito's setup

ROOT = base.ROOT
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- the slow upstream
def _chunk(obj) -> bytes:
    event = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def upstream_events(chunks: int) -> list[bytes]:
    """The HTTP chunks of one answer: `chunks` content events, a finish, usage, [DONE]."""
    base_obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
    }
    out = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": "Hello"} if i == 0 else {"content": " word"}
        out.append(
            _chunk({**base_obj, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        )
    tail = _chunk({**base_obj, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    tail += _chunk(
        {
            **base_obj,
            "choices": [],
            "usage": {
                "prompt_tokens": 14,
                "completion_tokens": chunks,
                "total_tokens": 14 + chunks,
            },
        }
    )
    tail += b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    out[-1] += tail
    return out


HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def serve_upstream(port: int, chunks: int, gap_ms: float):
    """One event per stream per tick: a single timer writes to every open stream, so the
    upstream's own cost is one write per chunk (keep-alive, as a provider's API is)."""
    import uvloop

    answers = {chunks: upstream_events(chunks)}  # a request's max_tokens picks another length
    active: dict = {}

    class Up(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = re.search(rb"(?i)content-length:\s*(\d+)", self.buf[:end])
            need = end + 4 + (int(m.group(1)) if m else 0)
            if len(self.buf) < need:
                return
            wanted = re.search(rb'"max_tokens":\s*(\d+)', self.buf[end:need])
            n = int(wanted.group(1)) if wanted else chunks
            self.events = answers.get(n) or answers.setdefault(n, upstream_events(n))
            self.buf = self.buf[need:]
            self.t.write(HEAD + self.events[0])
            if len(self.events) > 1:
                active[self] = 1

        def connection_lost(self, exc):
            active.pop(self, None)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Up, "127.0.0.1", port, backlog=8192)
        gap, tick = gap_ms / 1000, loop.time()
        while True:  # on a fixed clock: the time spent writing does not stretch the gap
            tick += gap
            await asyncio.sleep(max(0.0, tick - loop.time()))
            for proto, n in list(active.items()):
                proto.t.write(proto.events[n])
                if n + 1 >= len(proto.events):
                    del active[proto]
                else:
                    active[proto] = n + 1
        await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------------- the client
def run_client(host, port, path, key, body, concurrency, rounds, ramp_s, timeout_s) -> dict:
    """`concurrency` slots, each running `rounds` streams back to back, started evenly over
    `ramp_s`. A stream succeeds when it is a 200 that ends with `data: [DONE]`."""
    import uvloop

    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload

    class Cli(asyncio.Protocol):
        def __init__(self, done):
            self.done, self.events, self.head, self.tail = done, 0, b"", b""

        def connection_made(self, transport):
            transport.write(request)

        def data_received(self, data):
            if len(self.head) < 12:
                self.head += data[:12]
            self.events += data.count(b"data: ")
            self.tail = (self.tail + data)[-48:]
            if self.tail.endswith(b"\r\n0\r\n\r\n") and not self.done.done():
                self.done.set_result(self.result())

        def result(self):
            ok = self.head.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in self.tail
            return ok, self.events

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_result(self.result())

    durations, errors, events = [], 0, 0

    async def one(loop):
        nonlocal errors, events
        t0 = time.perf_counter()
        done = loop.create_future()
        try:
            transport, _ = await loop.create_connection(lambda: Cli(done), host, port)
            try:
                ok, n = await asyncio.wait_for(done, timeout_s)
            finally:
                transport.close()
        except (OSError, TimeoutError):
            ok, n = False, 0
        events += n
        if ok:
            durations.append(time.perf_counter() - t0)
        else:
            errors += 1

    async def slot(loop, delay):
        await asyncio.sleep(delay)
        for _ in range(rounds):
            await one(loop)

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(slot(loop, ramp_s * i / concurrency) for i in range(concurrency)))

    t0 = time.perf_counter()
    uvloop.run(main())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - t0,
        "durations": durations,
        "errors": errors,
        "events": events,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


# ---------------------------------------------------------------------- measuring
def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def load(url, key, body, concurrency, rounds, chunks, gap_ms, pid=None, clients=2) -> dict:
    """Drive `concurrency` streams × `rounds` from `clients` processes; the server's CPU
    and peak RSS over the run when its pid is given."""
    m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    stream_s = chunks * gap_ms / 1000
    ramp = min(5.0, stream_s)
    per = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]
    cmd = [sys.executable, __file__, "client", "--host", host, "--port", str(port)]
    cmd += ["--path", path, "--key", key, "--body", json.dumps(body), "--rounds", str(rounds)]
    cmd += ["--ramp", str(ramp), "--timeout", str(max(60.0, 6 * stream_s))]
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.wait(0.25):
            try:
                peak[0] = max(peak[0], rss_kb(pid))
            except FileNotFoundError:
                return

    cpu0 = cpu_s(pid) if pid else 0.0
    sampler = threading.Thread(target=sample, daemon=True)
    if pid:
        sampler.start()
    spy = None
    if pid and os.environ.get("STREAMS_PYSPY") and concurrency > 10:
        spy = subprocess.Popen(
            [
                os.environ["STREAMS_PYSPY"],
                "record",
                "-p",
                str(pid),
                "-f",
                "raw",
                "-o",
                str(Path(tempfile.gettempdir()) / f"streams-pyspy-{pid}-{concurrency}.txt"),
                "-r",
                "200",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([*cmd, "--concurrency", str(n)], stdout=subprocess.PIPE, text=True)
        for n in per
        if n
    ]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    wall = time.perf_counter() - t0
    stop.set()
    if spy:
        spy.send_signal(2)
        spy.wait()
    durations = sorted(d for o in outs for d in o["durations"])
    done = len(durations)
    result = {
        "concurrency": concurrency,
        "streams": concurrency * rounds,
        "completed": done,
        "errors": sum(o["errors"] for o in outs),
        "streams_per_s": round(done / wall, 1),
        "p50_s": round(statistics.median(durations), 3) if durations else None,
        "p99_s": round(durations[max(0, int(done * 0.99) - 1)], 3) if durations else None,
        "events": sum(o["events"] for o in outs),
        "client_cpu_s": round(sum(o["cpu_s"] for o in outs), 2),
        "wall_s": round(wall, 2),
    }
    if pid:
        used = cpu_s(pid) - cpu0
        relayed = done * (chunks + 2)  # content events, the finish and the usage chunk
        result["server_cpu_s"] = round(used, 2)
        result["cpu_us_per_chunk"] = round(1e6 * used / relayed, 1) if relayed else None
        result["peak_rss_mb"] = round(max(peak[0], rss_kb(pid)) / 1024, 1)
    return result


STREAM_CONFIG = """
orgs:
  - slug: bench
    name: Bench
    tier: enterprise
    providers:
      - {{name: slow, kind: openai_compatible, api_base: "http://127.0.0.1:{port}/v1", api_key: bench-upstream-key}}
      - {{name: held, kind: openai_compatible, api_base: "http://127.0.0.1:{held_port}/v1", api_key: bench-upstream-key}}
    deployments:
      - {{model: bench-slow, provider: slow, upstream_model: gpt-4o-mini}}
      - {{model: bench-held, provider: held, upstream_model: gpt-4o-mini}}
    policy:
      allowed_models: [bench-slow, bench-held]
      monthly_spend_cap_usd: 1000000000
"""

BODY = {
    "model": "bench-slow",
    "stream": True,
    "messages": [{"role": "user", "content": "Write a long answer."}],
}


def start_bonito(procs, root: Path, env: dict, port: int, log: Path):
    env = {**env, "PORT": str(port), "MALLOC_ARENA_MAX": "2"}
    proc = procs.start(
        [
            str(root / ".venv" / "bin" / "uvicorn"),
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
            # as make serve; an older checkout (--baseline) has httptools' plain protocol
            "gateway.dataplane.http_protocol:HeadDeadlineProtocol"
            if (root / "gateway" / "dataplane" / "http_protocol.py").exists()
            else "httptools",
            "--backlog",
            "8192",
        ],
        cwd=root,
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    return proc


def bench_streams(
    smoke=False, skip_litellm=False, baseline: str | None = None, sizes: dict | None = None
) -> dict:
    chunks, gap_ms = (20, 20.0) if smoke else (100, 50.0)
    conc, mem_conc, rounds = (50, 100, 1) if smoke else (2000, 5000, 2)
    sizes = {k: v for k, v in (sizes or {}).items() if v is not None}
    chunks, gap_ms = sizes.get("chunks", chunks), sizes.get("gap_ms", gap_ms)
    conc, rounds = sizes.get("concurrency", conc), sizes.get("rounds", rounds)
    mem_conc = sizes.get("memory_concurrency", mem_conc)
    # Thousands of streams: two sockets each in Bonito; the helpers inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    tmp = Path(tempfile.mkdtemp(prefix="bonito-streams-"))
    procs = base.Procs()
    res: dict = {
        "chunks": chunks,
        "gap_ms": gap_ms,
        "concurrency": conc,
        "memory_concurrency": mem_conc,
        "targets": {},
    }
    try:
        up_port = base.free_port()
        procs.start(
            [sys.executable, __file__, "upstream", "--port", str(up_port)]
            + ["--chunks", str(chunks), "--gap-ms", str(gap_ms)]
        )
        # The memory run holds many more streams open at a chunk rate one worker can serve
        # (its CPU per chunk is measured above): fewer chunks at a longer gap.
        held_chunks, held_gap = (10, 50.0) if smoke else (40, 500.0)
        held_port = base.free_port()
        procs.start(
            [sys.executable, __file__, "upstream", "--port", str(held_port)]
            + ["--chunks", str(held_chunks), "--gap-ms", str(held_gap)]
        )
        res["memory_chunks"], res["memory_gap_ms"] = held_chunks, held_gap
        env = base.bonito_env(tmp, 0)
        base.manage(env, "migrate", "--noinput", "-v0")
        (tmp / "streams.yaml").write_text(STREAM_CONFIG.format(port=up_port, held_port=held_port))
        base.manage(env, "apply_config", str(tmp / "streams.yaml"))
        key = (
            base.manage(
                env,
                "create_api_key",
                "--org",
                "bench",
                "--name",
                "streams",
                "--rpm",
                "100000000",
                "--tpm",
                "2000000000",
            )
            .strip()
            .splitlines()[-1]
        )
        targets = {"upstream": (f"http://127.0.0.1:{up_port}/v1/chat/completions", "x", None)}
        roots = {"bonito": ROOT}
        if baseline:
            roots["bonito_baseline"] = Path(baseline).resolve()
        for name, root in roots.items():
            port = base.free_port()
            proc = start_bonito(procs, root, env, port, tmp / f"{name}.log")
            base.wait_ok(f"http://127.0.0.1:{port}/v1/models", key)
            targets[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", key, proc)
        if not skip_litellm and (base.BENCH_BIN / "litellm").exists():
            master = "sk-bench-streams"
            ll_port, litellm = base.start_litellm(
                procs, tmp, {"bench-slow": f"http://127.0.0.1:{up_port}/v1"}, master
            )
            targets["litellm"] = (
                f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                master,
                litellm,
            )

        count_rows = (
            "from billing.models import UsageRecord as U;"
            "print(U.objects.filter(status='success', endpoint='chat').count(),"
            " U.objects.filter(endpoint='chat').count())"
        )
        bonito_ok = bonito_sent = 0
        for name, (url, k, proc) in targets.items():
            body = {**BODY, "model": "gpt-4o-mini"} if name == "upstream" else BODY
            pid = proc.pid if proc else None
            load(url, k, body, 10, 1, chunks, gap_ms, pid, clients=1)  # warm-up
            if name.startswith("bonito"):
                bonito_ok += 10
                bonito_sent += 10
            # LiteLLM spends ~20x Bonito's CPU per chunk: at Bonito's concurrency one
            # worker would take many minutes, so it gets a tenth (its CPU per chunk is the
            # comparison; its streams/s is not).
            c = max(10, conc // 10) if name == "litellm" else conc
            r = load(url, k, body, c, rounds, chunks, gap_ms, pid)
            res["targets"][name] = {"concurrent": r}
            if name.startswith("bonito"):
                bonito_ok += r["completed"]
                bonito_sent += r["streams"]
            if pid:
                # Short streams at the same concurrency: the per-stream cost (the request,
                # its usage row) and the per-chunk cost separated.
                short = max(2, chunks // 10)
                sr = load(url, k, {**body, "max_tokens": short}, c, rounds, short, gap_ms, pid)
                res["targets"][name]["short"] = sr
                if name.startswith("bonito"):
                    bonito_ok += sr["completed"]
                    bonito_sent += sr["streams"]
                if sr["completed"] and r["completed"]:
                    per_long = r["server_cpu_s"] / r["completed"]
                    per_short = sr["server_cpu_s"] / sr["completed"]
                    per_chunk = (per_long - per_short) / (chunks - short)
                    res["targets"][name]["marginal_us_per_chunk"] = round(1e6 * per_chunk, 1)
                    res["targets"][name]["per_stream_ms"] = round(
                        1e3 * (per_short - (short + 2) * per_chunk), 2
                    )
            if name.startswith("bonito") and mem_conc:
                held = {**body, "model": "bench-held"}
                m = load(url, k, held, mem_conc, 1, held_chunks, held_gap, pid)
                res["targets"][name]["memory"] = m
                bonito_ok += m["completed"]
                bonito_sent += m["streams"]
            print(name, json.dumps(res["targets"][name]), flush=True)
        deadline = time.monotonic() + 60
        while True:
            last = base.manage(env, "shell", "-c", count_rows).strip().splitlines()[-1]
            rows, all_rows = map(int, last.split())
            if all_rows >= bonito_sent or time.monotonic() > deadline:
                break
            time.sleep(1)
        # Every stream is one row. A stream the client gave up on (its timeout) in the
        # moment between Bonito's recording it and the last bytes is a success row the
        # client counted as an error: with errors, success rows may exceed completions.
        res["usage_check"] = {
            "streams_sent": bonito_sent,
            "completed_streams": bonito_ok,
            "rows": all_rows,
            "success_rows": rows,
            "ok": all_rows == bonito_sent
            and (rows == bonito_ok if bonito_ok == bonito_sent else rows >= bonito_ok),
        }
    finally:
        procs.stop_all()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return res


def table(r: dict) -> str:
    t = r["targets"]
    names = list(t)
    lines = [
        f"Streams: {r['chunks']} chunks × {r['gap_ms']:.0f} ms each, "
        f"{r['concurrency']:,} concurrent; memory run: {r['memory_concurrency']:,} at once, "
        f"{r.get('memory_chunks')} chunks × {r.get('memory_gap_ms', 0):.0f} ms",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def cell(n, part, field, fmt="{}"):
        v = t[n].get(part, {}).get(field) if part else t[n].get(field)
        return fmt.format(v) if v is not None else ""

    rows = [
        ("concurrent streams", "concurrent", "concurrency", "{:,}"),
        ("completed streams/s", "concurrent", "streams_per_s", "{}"),
        ("stream duration p50", "concurrent", "p50_s", "{} s"),
        ("stream duration p99", "concurrent", "p99_s", "{} s"),
        ("errors", "concurrent", "errors", "{}"),
        ("server CPU per chunk", "concurrent", "cpu_us_per_chunk", "{} µs"),
        ("  of which per chunk (long - short streams)", None, "marginal_us_per_chunk", "{} µs"),
        ("  and per stream (request, usage row)", None, "per_stream_ms", "{} ms"),
        ("client CPU (all clients)", "concurrent", "client_cpu_s", "{} s"),
        ("peak RSS", "concurrent", "peak_rss_mb", "{} MB"),
    ]
    at_once = f"{r['memory_concurrency']:,} at once"
    if r["memory_concurrency"]:
        rows += [
            (f"{at_once}: errors", "memory", "errors", "{}"),
            (f"{at_once}: peak RSS", "memory", "peak_rss_mb", "{} MB"),
            (f"{at_once}: p99", "memory", "p99_s", "{} s"),
            (f"{at_once}: CPU per chunk", "memory", "cpu_us_per_chunk", "{} µs"),
        ]
    for label, part, field, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(cell(n, part, field, fmt) for n in names) + " |")
    u = r["usage_check"]
    lines.append(
        f"\nUsage check: {u['streams_sent']} streams sent to Bonito, {u['completed_streams']} "
        f"completed -> {u['rows']} usage rows, {u['success_rows']} successes: "
        f"{'OK' if u['ok'] else 'MISMATCH'}"
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    up = sub.add_parser("upstream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--chunks", type=int, default=100)
    up.add_argument("--gap-ms", type=float, default=50.0)
    cl = sub.add_parser("client")
    for name in ("--host", "--path", "--key", "--body"):
        cl.add_argument(name, required=True)
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--concurrency", type=int, required=True)
    cl.add_argument("--rounds", type=int, default=1)
    cl.add_argument("--ramp", type=float, default=1.0)
    cl.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--baseline", help="another checkout's root, run in the same run")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "streams.json"))
    for name, kind in (
        ("--concurrency", int),
        ("--memory-concurrency", int),
        ("--rounds", int),
        ("--chunks", int),
        ("--gap-ms", float),
    ):
        parser.add_argument(name, type=kind, help="override the run's size (0: no memory run)")
    args = parser.parse_args()
    if args.cmd == "upstream":
        return serve_upstream(args.port, args.chunks, args.gap_ms)
    if args.cmd == "client":
        r = run_client(
            args.host,
            args.port,
            args.path,
            args.key,
            json.loads(args.body),
            args.concurrency,
            args.rounds,
            args.ramp,
            args.timeout,
        )
        print(json.dumps(r))
        return None
    sizes = {
        "concurrency": args.concurrency,
        "memory_concurrency": args.memory_concurrency,
        "rounds": args.rounds,
        "chunks": args.chunks,
        "gap_ms": args.gap_ms,
    }
    res = bench_streams(args.smoke, args.skip_litellm, args.baseline, sizes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(table(res))
    print(f"\nJSON: {out}")
    if not res["usage_check"]["ok"]:
        sys.exit("usage rows do not match completed streams: something was dropped")
    if (
        any(t.get("concurrent", {}).get("errors") for t in res["targets"].values())
        and not args.smoke
    ):
        print("note: some streams failed (see errors)")
    return res


if __name__ == "__main__":
    main()
