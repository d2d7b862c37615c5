#!/usr/bin/env python3
"""The usage journal's cost on the request path: UsageSink.submit() with and without it.

`python bench/usage_journal.py [--records N] [--dir FOLDER]`: submits N records shaped
like the gateway's (the writer thread sleeps 2 ms per batch, as for a database round trip,
so only the request side is timed) and prints microseconds per submit and what that is of a request at the /v1 throughput
measured in docs/benchmarks.md. The journal's folder should be on the disk the server
uses (default: a temporary folder under var/)."""

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.dataplane.usage import UsageSink  # noqa: E402

REQUESTS_PER_S = 3778  # one worker, docs/benchmarks.md (uvicorn + uvloop + httptools)


def record(i: int) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "org_id": 1,
        "key_id": 1,
        "team_id": None,
        "endpoint": "chat",
        "model_requested": "bench-chat",
        "model_used": "gpt-4o-mini",
        "provider": "openai_compatible",
        "deployment": "nginx/gpt-4o-mini",
        "input_tokens": 14,
        "output_tokens": 9,
        "cached_tokens": 0,
        "cost": 0.0000075,
        "latency_ms": 3,
        "ttft_ms": None,
        "status": "success",
        "http_status": 200,
        "error_type": "",
        "request_id": f"req_{i:032x}",
        "source": "shared_gateway",
        "created_at": time.time(),
    }


def run(records: list[dict], journal: Path | None, spool: Path) -> float:
    sink = UsageSink(lambda batch: time.sleep(0.002), spool, journal_dir=journal)
    start = time.perf_counter()
    for r in records:
        sink.submit(r)
    elapsed = time.perf_counter() - start
    sink.stop()
    return elapsed / len(records) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=str(ROOT / "var"))
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    records = [record(i) for i in range(args.records)]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-journal-") as tmp:
        off, on = [], []
        for n in range(args.rounds):
            off.append(run(records, None, Path(tmp) / "spool"))
            on.append(run(records, Path(tmp) / f"journal-{n}", Path(tmp) / "spool"))
    off_us, on_us = statistics.median(off), statistics.median(on)
    request_us = 1e6 / REQUESTS_PER_S
    print(f"submit without journal: {off_us:.2f} µs  (median of {args.rounds} x {args.records})")
    print(f"submit with journal:    {on_us:.2f} µs")
    print(
        f"journal cost: {on_us - off_us:.2f} µs per request = "
        f"{(on_us - off_us) / request_us:.1%} of a request at {REQUESTS_PER_S} requests/s"
    )


if __name__ == "__main__":
    main()
