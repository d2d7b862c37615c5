"""How the 'steps' head (committed features + the 14 gsm8k_steps features) scores the chat
fixtures (gateway/tests/fixtures/chat_*.jsonl) against the committed head, both fitted on
the whole development set with the committed recipe (no chat prior, no short-prompt rule:
the raw heads). Hard-vs-easy AUC per set, and the share of each label scored above the
dev set's median (a rough stand-in for the default cut)."""

import json

import numpy as np
from gsm8k_bag_gate_steps import STEPS, X_COMMITTED, c, fast_fit_head, logit, rows
from gsm8k_common import ROOT, bench
from gsm8k_steps import steps_features

from core import smart_learned
from gateway.dataplane import smart

MCI = list(smart.FEATURE_NAMES).index("multiple_choice")
lo, hi = c["rules"].min(0), c["rules"].max(0)
everything = np.arange(len(rows))
heads = {
    "committed": (fast_fit_head(everything, X_COMMITTED), False),
    "steps": (fast_fit_head(everything, np.hstack([X_COMMITTED, STEPS])), True),
}
fx = ROOT / "gateway" / "tests" / "fixtures"
items = []
for f in ("chat_requests.jsonl", "chat_short_requests.jsonl"):
    for line in (fx / f).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            r["set"] = f.split(".")[0] + ":" + r.get("set", "all")
            items.append(r)
for name, (m, with_steps) in heads.items():
    xd = np.hstack([X_COMMITTED, STEPS]) if with_steps else X_COMMITTED
    median = np.median(logit(m, xd))
    out = []
    for r in items:
        rf = np.clip(np.asarray(smart.features(bench.body_of(r["prompt"]))), lo, hi)
        x = np.concatenate([smart_learned.embed(r["prompt"]), rf])
        if with_steps:
            x = np.concatenate([x, steps_features(r["prompt"], bool(rf[MCI]))])
        out.append(float(logit(m, x[None])[0]))
    out = np.asarray(out)
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
            f"{name:9s} {s:40s} hard {len(h):3d} above median {np.mean(h > median) if len(h) else 0:.2f}"
            f"  easy {len(e):3d} above median {np.mean(e > median) if len(e) else 0:.2f}  AUC {auc:.3f}"
        )
