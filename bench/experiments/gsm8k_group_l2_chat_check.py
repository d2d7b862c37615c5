"""gsm8k_steps_chat_check.py for the current head against nonneg-steps (gsm8k_group_l2.py),
both fitted on the whole development set (raw heads: no chat prior, no short-prompt rule;
steps features read within their development-set range, as at request time). Descriptive."""

import json

import numpy as np
from gsm8k_common import ROOT, bench
from gsm8k_group_l2 import NONNEG, STEPS, N, X, c, fit, pens
from gsm8k_steps import steps_features

from core import smart_learned
from gateway.dataplane import smart

MCI = list(smart.FEATURE_NAMES).index("multiple_choice")
lo, hi = c["rules"].min(0), c["rules"].max(0)
slo, shi = STEPS.min(0), STEPS.max(0)
everything = np.arange(N)
heads = {
    "current": fit(everything, pens(3000.0)),
    "nonneg": fit(everything, pens(30.0), nonneg=NONNEG),
}
fx = ROOT / "gateway" / "tests" / "fixtures"
items = []
for f in ("chat_requests.jsonl", "chat_short_requests.jsonl"):
    for line in (fx / f).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            r["set"] = f.split(".")[0] + ":" + r.get("set", "all")
            items.append(r)
xs = []
for r in items:
    rf = np.clip(np.asarray(smart.features(bench.body_of(r["prompt"]))), lo, hi)
    st = np.clip(steps_features(r["prompt"], bool(rf[MCI])), slo, shi)
    xs.append(np.concatenate([smart_learned.embed(r["prompt"]), rf, st]))
xs = np.asarray(xs)
for name, (w, mean, scale) in heads.items():
    median = np.median(w[0] + ((X - mean) / scale) @ w[1:])
    out = w[0] + ((xs - mean) / scale) @ w[1:]
    for s in sorted({r["set"] for r in items}):
        idx = [i for i, r in enumerate(items) if r["set"] == s]
        h = np.array([out[i] for i in idx if items[i]["label"] == "hard"])
        e = np.array([out[i] for i in idx if items[i]["label"] == "easy"])
        auc = (
            np.mean([(a > b) + 0.5 * (a == b) for a in h for b in e])
            if len(h) and len(e)
            else float("nan")
        )
        print(
            f"{name:8s} {s:40s} hard {len(h):3d} above median {np.mean(h > median) if len(h) else 0:.2f}"
            f"  easy {len(e):3d} above median {np.mean(e > median) if len(e) else 0:.2f}  AUC {auc:.3f}"
        )
