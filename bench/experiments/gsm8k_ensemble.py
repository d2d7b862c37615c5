"""Rank-averaging three scores: the rules classifier, the committed learned head, and the
expected gain (P(strong right) - P(weak right), two heads like the committed one). Each
score is mapped to its percentile among the inner out-of-fold scores (every source: one
table, as the product would ship); the weights (a 0.1 grid on the simplex) by nested CV
inside the training folds, by inner GSM8K gain-AUC; and equal weights, fixed beforehand
(docs/smart-routing.md, "Tried on 2026-12-03")."""

import itertools

import numpy as np
from gsm8k_common import SEEDS, data, fit_logistic, fold_array, labels, predict_logistic, report
from gsm8k_pairwise import gain_auc

rows, c = data()
y, weak, strong = labels(rows)
gain = strong - weak
xl = np.hstack([c["emb"], c["rules"]])
xr = c["rules"]
gsm = np.array([r["family"] == "gsm8k" for r in rows])
GRID = [w for w in itertools.product(np.arange(0, 1.01, 0.1), repeat=3) if abs(sum(w) - 1) < 1e-9]


def components(fit_idx, apply_idx):
    rules = predict_logistic(fit_logistic(xr[fit_idx], y[fit_idx], 1.0), xr[apply_idx])
    learned = predict_logistic(fit_logistic(xl[fit_idx], y[fit_idx], 3000.0), xl[apply_idx])
    ps = predict_logistic(fit_logistic(xl[fit_idx], strong[fit_idx], 3000.0), xl[apply_idx])
    pw = predict_logistic(fit_logistic(xl[fit_idx], weak[fit_idx], 3000.0), xl[apply_idx])
    return np.stack([rules, learned, ps - pw])  # 3 x len(apply_idx)


def percentile(ref, v):
    ref = np.sort(ref)
    return (np.searchsorted(ref, v, "left") + np.searchsorted(ref, v, "right")) / (2 * len(ref))


nested, equal, chosen, gain_runs = [], [], [], []
for seed in SEEDS:
    fold = fold_array(rows, seed)
    s_n, s_e, s_g = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        inner = np.zeros((3, len(rows)))
        for j in set(fold[tr]):
            fi, he = tr[fold[tr] != j], tr[fold[tr] == j]
            inner[:, he] = components(fi, he)
        ref = inner[:, tr]
        inner_p = np.stack([percentile(ref[m], inner[m, tr]) for m in range(3)])
        g = gsm[tr]
        auc = {w: gain_auc(np.asarray(w) @ inner_p[:, g], gain[tr][g]) for w in GRID}
        best = max(auc, key=auc.get)
        chosen.append(tuple(round(v, 1) for v in best))
        comp = components(tr, te)
        s_g[te] = comp[2]
        test_p = np.stack([percentile(ref[m], v) for m, v in enumerate(comp)])
        s_n[te] = np.asarray(best) @ test_p
        s_e[te] = test_p.mean(axis=0)
    nested.append(s_n)
    equal.append(s_e)
    gain_runs.append(s_g)
    print("seed", seed, chosen[-5:], flush=True)
print("weights chosen (rules, learned, gain):", {w: chosen.count(w) for w in set(chosen)})
report("expected gain (2026-12-02, re-run)", rows, np.asarray(gain_runs))
report("rank average, equal weights", rows, np.asarray(equal))
report("rank average, nested weights", rows, np.asarray(nested))
