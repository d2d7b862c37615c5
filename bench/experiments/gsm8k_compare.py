"""Each kept variant against the committed head: GSM8K mean ± sd (min-max) over fold seeds
0-9, MMLU mean, seeds won, and a paired bootstrap over the 400 GSM8K prompts of the
difference in mean-over-seeds saving (2,000 resamples)."""

import sys

import numpy as np
from gsm8k_common import (
    data,
    gain_auc,
    labels,
    load_scores,
    paired_bootstrap,
    paired_bootstrap_auc,
    saving,
    summary,
)

rows, _ = data()
_, weak, strong = labels(rows)
g = np.array([i for i, r in enumerate(rows) if r["family"] == "gsm8k"])
m = np.array([i for i, r in enumerate(rows) if r["family"] == "mmlu"])
base = load_scores("committed (mean + rules, L2 3000)")
base_g = [saving(weak[g], strong[g], s[g]) for s in base]
for name in sys.argv[1:]:
    runs = load_scores(name)
    vg = [saving(weak[g], strong[g], s[g]) for s in runs]
    vm = [saving(weak[m], strong[m], s[m]) for s in runs]
    won = sum(a > b for a, b in zip(vg, base_g, strict=True))
    lo, hi, p = paired_bootstrap(weak[g], strong[g], runs[:, g], base[:, g])
    auc = np.mean([gain_auc(weak[g], strong[g], s[g]) for s in runs])
    auc0 = np.mean([gain_auc(weak[g], strong[g], s[g]) for s in base])
    alo, ahi = paired_bootstrap_auc(weak[g], strong[g], runs[:, g], base[:, g])
    print(
        f"{name}: GSM8K {summary(vg)}, MMLU {np.mean(vm):.1%}; "
        f"vs committed {np.mean(vg) - np.mean(base_g):+.1%} (won {won}/10 seeds), "
        f"bootstrap 95% [{lo:+.1%}, {hi:+.1%}], P(>0) {p:.2f}; "
        f"GSM8K gain-AUC {auc:.3f} vs {auc0:.3f}, bootstrap 95% [{alo:+.3f}, {ahi:+.3f}]",
        flush=True,
    )
