"""A GSM8K-specific correction on top of the committed head: a logistic model fitted on the
open problems of the training folds (no multiple-choice layout, which is how the product
would tell them apart) whose prior is the committed head's logit, over the same features,
with a strong L2 penalty so that it stays near the shared head; the penalty by nested CV
inside the training folds (inner log loss on the open problems). docs/smart-routing.md,
"Tried on 2026-12-03"."""

import numpy as np
from gsm8k_common import SEEDS, data, fit_logistic, fold_array, labels, report

rows, c = data()
y, weak, strong = labels(rows)
x = np.hstack([c["emb"], c["rules"]])
open_ = c["rules"][:, 14] == 0  # the rules features' multiple_choice
assert (open_ == np.array([r["family"] == "gsm8k" for r in rows])).all()
L2S = (1000.0, 3000.0, 10000.0, 30000.0)


def logit(m, idx):
    w, mean, scale = m
    return w[0] + ((x[idx] - mean) / scale) @ w[1:]


def fit_offset(idx, off, l2):
    mean, scale = x[idx].mean(axis=0), x[idx].std(axis=0)
    scale[scale == 0] = 1
    z = np.hstack([np.ones((len(idx), 1)), (x[idx] - mean) / scale])
    w = np.zeros(z.shape[1])
    pen = np.full(z.shape[1], l2)
    pen[0] = l2  # the prior already has an intercept: the correction's is penalised too
    for _ in range(30):
        p = 1 / (1 + np.exp(-np.clip(off + z @ w, -30, 30)))
        step = np.linalg.solve(
            (z * (p * (1 - p))[:, None]).T @ z + np.diag(pen), z.T @ (p - y[idx]) + pen * w
        )
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w, mean, scale


def score(base, corr, idx):
    t = logit(base, idx) + logit(corr, idx) * open_[idx]
    return 1 / (1 + np.exp(-np.clip(t, -30, 30)))


runs, chosen = [], []
for seed in SEEDS:
    fold = fold_array(rows, seed)
    s = np.zeros(len(rows))
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        loss = dict.fromkeys(L2S, 0.0)
        for j in set(fold[tr]):
            fi, he = tr[fold[tr] != j], tr[fold[tr] == j]
            base = fit_logistic(x[fi], y[fi], 3000.0)
            go, ho = fi[open_[fi]], he[open_[he]]
            for l2 in L2S:
                p = np.clip(score(base, fit_offset(go, logit(base, go), l2), ho), 1e-12, 1 - 1e-12)
                loss[l2] -= (y[ho] * np.log(p) + (1 - y[ho]) * np.log(1 - p)).sum()
        best = min(loss, key=loss.get)
        chosen.append(best)
        base = fit_logistic(x[tr], y[tr], 3000.0)
        go = tr[open_[tr]]
        s[te] = score(base, fit_offset(go, logit(base, go), best), te)
    runs.append(s)
    print("seed", seed, chosen[-5:], flush=True)
print("L2 chosen:", {l2: chosen.count(l2) for l2 in L2S})
report("committed + GSM8K correction (nested L2)", rows, np.asarray(runs))
