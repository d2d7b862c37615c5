"""The maths head's development-set figures on other fold seeds (README.md, "The maths
head"): the product's training (bench.out_of_fold_fixed with the maths-shaped mask, so
bench.fit_learned) against the shipped head (the same without the mask), GSM8K and MMLU
saving at 95 % of the strong model's quality, pooled over the five folds as the bench pools
them, and GSM8K's saving averaged over the folds each taken alone (each test fold ranked by
itself: one head's order, as in service).

    FOLD_SEEDS=30-39 python maths_head_seeds.py
"""

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import smart_routing as bench  # noqa: E402

lo, hi = (int(v) for v in os.environ.get("FOLD_SEEDS", "0-9").split("-"))
rows = bench.load(bench.DATA)
feats = [bench.smart.features(bench.body_of(r["prompt"])) for r in rows]
x = bench.learned_matrix(rows, feats)
mask = bench.maths_mask(feats, x)
fam = {f: [i for i, r in enumerate(rows) if r["family"] == f] for f in ("gsm8k", "mmlu")}
out = {
    "shipped": {"gsm8k": [], "mmlu": [], "per_fold": []},
    "maths": {"gsm8k": [], "mmlu": [], "per_fold": []},
}
for seed in range(lo, hi + 1):
    fold = bench.folds(rows, seed)
    for name, m in (("shipped", None), ("maths", mask)):
        s = bench.out_of_fold_fixed(rows, x, bench.LEARNED_L2, seed, ranking=True, mask=m)
        for f, idx in fam.items():
            out[name][f].append(
                bench.saving_at_quality([rows[i] for i in idx], [s[i] for i in idx])
            )
        per = []
        for k in range(bench.FOLDS):
            gi = [i for i in fam["gsm8k"] if fold[i] == k]
            per.append(bench.saving_at_quality([rows[i] for i in gi], [s[i] for i in gi]))
        out[name]["per_fold"].append(float(np.mean(per)))
    print(
        f"seed {seed}: "
        + ", ".join(
            f"{n} {out[n]['gsm8k'][-1]:.1%} / {out[n]['mmlu'][-1]:.1%} / folds {out[n]['per_fold'][-1]:.1%}"
            for n in out
        ),
        flush=True,
    )
for n, r in out.items():
    g, m, p = (np.array(r[k]) for k in ("gsm8k", "mmlu", "per_fold"))
    print(
        f"{n:8s} seeds {lo}-{hi}: GSM8K pooled {g.mean():.1%} ± {g.std():.1%}, "
        f"per fold {p.mean():.1%}; MMLU {m.mean():.1%}"
    )
d = np.array(out["maths"]["gsm8k"]) - np.array(out["shipped"]["gsm8k"])
dp = np.array(out["maths"]["per_fold"]) - np.array(out["shipped"]["per_fold"])
print(
    f"maths - shipped: pooled {d.mean():+.1%} (won {(d > 0).sum()}/{len(d)}), "
    f"per fold {dp.mean():+.1%} (won {(dp > 0).sum()}/{len(dp)})"
)
