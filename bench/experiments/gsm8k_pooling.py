"""Pooling of MiniLM's static token vectors, and PCA of the embedding fitted inside the
training folds (docs/smart-routing.md, "Tried on 2026-12-03"). Every variant feeds the
committed head's recipe (embedding + rules features, logistic, L2 3,000) unless it says."""

import sys

import numpy as np
from gsm8k_common import SEEDS, data, fit_logistic, fold_array, labels, predict_logistic, report

from core import smart_learned

rows, c = data()
y, weak, strong = labels(rows)
_, table = smart_learned.encoder()
table = table.astype(np.float64)
docs = [c["ids"][c["offs"][i] : c["offs"][i + 1]] for i in range(len(rows))]
uniq = [np.unique(d, return_counts=True) for d in docs]


def normalise(v):
    n = np.linalg.norm(v, axis=1, keepdims=True)
    n[n == 0] = 1
    return v / n


def oof(x_of_fold, l2=3000.0):
    """10 seeds of out-of-fold scores; x_of_fold(train_idx) -> the matrix for every row."""
    runs = []
    for seed in SEEDS:
        fold = fold_array(rows, seed)
        s = np.zeros(len(rows))
        for k in range(5):
            tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
            x = x_of_fold(tr)
            m = fit_logistic(x[tr], y[tr], l2)
            s[te] = predict_logistic(m, x[te])
        runs.append(s)
    return np.asarray(runs)


rules = c["rules"]
which = sys.argv[1:] or ["committed", "idf", "max", "meanmax", "pca"]

if "committed" in which:
    x = np.hstack([c["emb"], rules])
    report("committed (mean + rules, L2 3000)", rows, oof(lambda tr: x))

if "idf" in which:

    def idf_x(tr):
        df = np.zeros(table.shape[0])
        for i in tr:
            df[uniq[i][0]] += 1
        idf = np.log((len(tr) + 1) / (df + 1)) + 1
        e = np.stack([(idf[u] * n) @ table[u] / max((idf[u] * n).sum(), 1e-9) for u, n in uniq])
        return np.hstack([normalise(e), rules])

    report("IDF-weighted mean + rules", rows, oof(idf_x))

mx = normalise(np.stack([table[d].max(axis=0) for d in docs]))
if "max" in which:
    x = np.hstack([mx, rules])
    report("max-pool + rules", rows, oof(lambda tr: x))

if "meanmax" in which:
    x = np.hstack([c["emb"], mx, rules])
    report("mean+max + rules", rows, oof(lambda tr: x))

if "pca" in which:
    # k and L2 by nested CV inside the training folds (inner log loss over all sources).
    KS, L2S = (16, 32, 64, 128), (30.0, 300.0, 3000.0)

    def pca_fit(e):
        mu = e.mean(axis=0)
        _, sv, vt = np.linalg.svd(e - mu, full_matrices=False)
        return mu, vt, sv / np.sqrt(len(e))

    def project(p, e, k):
        mu, vt, sd = p
        return (e - mu) @ vt[:k].T / sd[:k]  # whitened

    runs, chosen = [], []
    for seed in SEEDS:
        fold = fold_array(rows, seed)
        s = np.zeros(len(rows))
        for k in range(5):
            tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
            loss = {}
            for j in set(fold[tr]):
                fi, he = tr[fold[tr] != j], tr[fold[tr] == j]
                p = pca_fit(c["emb"][fi])
                for kk in KS:
                    xf = np.hstack([project(p, c["emb"], kk), rules])
                    for l2 in L2S:
                        pr = np.clip(
                            predict_logistic(fit_logistic(xf[fi], y[fi], l2), xf[he]),
                            1e-12,
                            1 - 1e-12,
                        )
                        ll = -(y[he] * np.log(pr) + (1 - y[he]) * np.log(1 - pr)).sum()
                        loss[kk, l2] = loss.get((kk, l2), 0) + ll
            best = min(loss, key=loss.get)
            chosen.append(best)
            p = pca_fit(c["emb"][tr])
            xf = np.hstack([project(p, c["emb"], best[0]), rules])
            s[te] = predict_logistic(fit_logistic(xf[tr], y[tr], best[1]), xf[te])
        runs.append(s)
    print("PCA chosen (k, L2):", sorted({b: chosen.count(b) for b in chosen}.items()))
    report("PCA-whitened (nested k, L2) + rules", rows, np.asarray(runs))
