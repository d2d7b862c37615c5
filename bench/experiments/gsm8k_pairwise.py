"""The committed head's objective plus a pairwise ranking term on GSM8K: for every pair of
GSM8K training prompts where the strong model gains more over the weak one (strong - weak:
+1 / 0 / -1), a logistic loss on their score difference (docs/smart-routing.md, "Tried on
2026-12-03"). Its weight by nested CV inside the training folds (inner GSM8K gain-AUC).
Needs scipy (the experiments' venv)."""

import numpy as np
from gsm8k_common import SEEDS, data, fit_logistic, fold_array, labels, report
from scipy.optimize import minimize

rows, c = data()
y, weak, strong = labels(rows)
gain = strong - weak
x = np.hstack([c["emb"], c["rules"]])
gsm = np.array([r["family"] == "gsm8k" for r in rows])
L2 = 3000.0
LAMBDAS = (0.0, 1.0, 3.0, 10.0)


def gain_auc(scores, g):
    """Concordance of the score with strong - weak over pairs that differ (ties half)."""
    d = scores[:, None] - scores[None, :]
    better = g[:, None] > g[None, :]
    return ((d > 0) + 0.5 * (d == 0))[better].mean()


def fit_pairwise(idx, lam, base=None):
    w0, mean, scale = base or fit_logistic(x[idx], y[idx], L2)
    if lam == 0:
        return w0, mean, scale
    z = np.hstack([np.ones((len(idx), 1)), (x[idx] - mean) / scale])
    yy = y[idx]
    gi = np.where(gsm[idx])[0]
    gg = gain[idx][gi]
    a, b = np.where(gg[:, None] > gg[None, :])
    a, b = gi[a], gi[b]
    scale_pairs = lam * len(gi) / len(a)
    pen = np.full(z.shape[1], L2)
    pen[0] = 0

    def f(w):
        t = z @ w
        p = 1 / (1 + np.exp(-np.clip(t, -30, 30)))
        loss = (np.logaddexp(0, t) - yy * t).sum() + 0.5 * (pen * w * w).sum()
        d = t[a] - t[b]
        loss += scale_pairs * np.logaddexp(0, -d).sum()
        coef = p - yy
        gpair = -scale_pairs / (1 + np.exp(np.clip(d, -30, 30)))
        np.add.at(coef, a, gpair)
        np.add.at(coef, b, -gpair)
        return loss, z.T @ coef + pen * w

    w = minimize(f, w0, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    return w, mean, scale


def predict(m, idx):
    w, mean, scale = m
    return w[0] + ((x[idx] - mean) / scale) @ w[1:]


def main():
    runs, chosen, fixed1 = [], [], []
    for seed in SEEDS:
        fold = fold_array(rows, seed)
        s = np.zeros(len(rows))
        s1 = np.zeros(len(rows))
        for k in range(5):
            tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
            inner = {lam: np.zeros(len(rows)) for lam in LAMBDAS}
            for j in set(fold[tr]):
                fi, he = tr[fold[tr] != j], tr[fold[tr] == j]
                for lam in LAMBDAS:
                    inner[lam][he] = predict(fit_pairwise(fi, lam), he)
            g_tr = tr[gsm[tr]]
            auc = {lam: gain_auc(inner[lam][g_tr], gain[g_tr]) for lam in LAMBDAS}
            best = max(auc, key=auc.get)
            chosen.append(best)
            base = fit_logistic(x[tr], y[tr], L2)
            s[te] = predict(fit_pairwise(tr, best, base), te)
            s1[te] = predict(fit_pairwise(tr, 1.0, base), te)
        runs.append(s)
        fixed1.append(s1)
        print("seed", seed, "chosen so far", chosen[-5:], flush=True)
    print("lambda chosen per fold:", {lam: chosen.count(lam) for lam in LAMBDAS})
    report("pairwise + pointwise, lambda fixed 1", rows, np.asarray(fixed1))
    report("pairwise + pointwise, lambda nested", rows, np.asarray(runs))


if __name__ == "__main__":
    main()
