"""Descriptive only, run AFTER the results of gsm8k_bag_gate_steps.py were seen (not a
selection: nothing here is proposed as a variant): the 'steps' variant (committed recipe,
committed features + the 14 steps features) with one steps feature left out at a time,
GSM8K saving over fold seeds 0-9; and the steps features' weights in the head fitted on
the whole development set (standardised units)."""

import numpy as np
from gsm8k_bag_gate_steps import STEPS, X_COMMITTED, committed, fast_fit_head, rows
from gsm8k_common import labels, saving, summary
from gsm8k_steps import NAMES

_, weak, strong = labels(rows)
g = np.array([i for i, r in enumerate(rows) if r["family"] == "gsm8k"])
w, _, _ = fast_fit_head(np.arange(len(rows)), np.hstack([X_COMMITTED, STEPS]))
print("weights:", {n: round(float(v), 4) for n, v in zip(NAMES, w[-len(NAMES) :], strict=True)})
for j, name in enumerate(NAMES):
    keep = [k for k in range(len(NAMES)) if k != j]
    x = np.hstack([X_COMMITTED, STEPS[:, keep]])
    vals = [saving(weak[g], strong[g], committed(x, seed)[g]) for seed in range(10)]
    print(f"without {name:12s} {summary(vals)}", flush=True)
