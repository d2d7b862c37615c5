"""Each kept variant against the committed head: GSM8K mean ± sd (min-max) over fold seeds
0-9, MMLU mean, seeds won, and a paired bootstrap over the 400 GSM8K prompts of the
difference in mean-over-seeds saving (2,000 resamples)."""

import sys

import numpy as np
from gsm8k_common import data, labels, load_scores, summary, versus

rows, _ = data()
_, weak, strong = labels(rows)
g = np.array([i for i, r in enumerate(rows) if r["family"] == "gsm8k"])
m = np.array([i for i, r in enumerate(rows) if r["family"] == "mmlu"])
base = load_scores("committed (mean + rules, L2 3000)")
for name in sys.argv[1:]:
    vg, vm, diff, won, (lo, hi, p), (auc, auc0, alo, ahi) = versus(
        weak, strong, g, m, load_scores(name), base
    )
    print(
        f"{name}: GSM8K {summary(vg)}, MMLU {vm:.1%}; "
        f"vs committed {diff:+.1%} (won {won}/10 seeds), "
        f"bootstrap 95% [{lo:+.1%}, {hi:+.1%}], P(>0) {p:.2f}; "
        f"GSM8K gain-AUC {auc:.3f} vs {auc0:.3f}, bootstrap 95% [{alo:+.3f}, {ahi:+.3f}]",
        flush=True,
    )
