"""The current head (embedding + rules + 14 steps features, L2 3,000, ranking term weight 1)
against three variants fixed before any of them ran (2026-12-04, research, not the product):

  current      the committed head re-measured (fit = gsm8k_bag_gate_steps.fit with a
               per-column penalty; at one L2 it is that fit exactly)
  group-l2     the same head, the 14 steps features penalised by their own L2 chosen by
               nested CV from (3000, 300, 30, 3) (embedding and rules stay at 3,000);
               inner criterion: the mean held-out GSM8K gain concordance over the training
               split's other folds (the criterion the gate research used; fixed beforehand)
  rankavg-platt  open prompts: 50/50 average of the current head's logit percentile and the
               steps estimate's percentile (references: the training split's open prompts,
               as rankavg-steps), then mapped to a probability by Platt scaling
               (sigmoid(a + b * r)) fitted on the training split's inner out-of-fold rank
               averages against y (4 inner folds, each its own head and references). Platt
               is strictly increasing, so the order (and the savings) are the rank
               average's; isotonic would tie. MMLU: the current head.
  nonneg-steps the current head with the 14 steps weights constrained >= 0 (every count is
               one more thing to work out: a direction fixed from first principles), the
               constraint taking the place of their shrinkage: steps L2 fixed at 30
               beforehand (embedding and rules 3,000). Active-set Newton.

  export ROUTING_DEV=.../dev.jsonl GSM8K_EXP_DIR=/tmp/x OMP_NUM_THREADS=1
  ../../.venv/bin/python gsm8k_common.py
  ../../.venv/bin/python gsm8k_group_l2.py current group-l2 rankavg-platt nonneg-steps
  ../../.venv/bin/python gsm8k_group_l2.py compare
  FOLD_SEEDS=10-19 ...  (only for a variant gaining >= 2 points on 0-9)
Outputs logits for the head variants and probabilities for rankavg-platt (saving only
reads the order; calibration is reported at seed 0 after the sigmoid of a logit)."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from gsm8k_common import WORK, bench, data, fold_array, gain_auc, labels, report
from gsm8k_steps import steps_features

from gateway.dataplane import smart

rows, c = data()
N = len(rows)
FIRST, LAST = (int(v) for v in os.environ.get("FOLD_SEEDS", "0-9").split("-"))
SEEDS = range(FIRST, LAST + 1)
TAG = "" if (FIRST, LAST) == (0, 9) else f" [seeds {FIRST}-{LAST}]"
PREFIX = "r1204g "
Y, WEAK, STRONG = labels(rows)
GAIN = STRONG - WEAK
MC = c["rules"][:, list(smart.FEATURE_NAMES).index("multiple_choice")]
OPEN = MC == 0
IS_G = np.array([r["family"] == "gsm8k" for r in rows])
assert (OPEN == IS_G).all()
path = WORK / "steps.npy"
if path.exists():
    STEPS = np.load(path)
else:
    STEPS = np.asarray(
        [steps_features(r["prompt"], bool(m)) for r, m in zip(rows, MC, strict=True)]
    )
    np.save(path, STEPS)
if os.environ.get("PERMUTE_STEPS"):
    _k = int(os.environ["PERMUTE_STEPS"])
    _g = np.where(IS_G)[0]
    STEPS = STEPS.copy()
    STEPS[_g] = STEPS[np.random.default_rng(_k).permutation(_g)]
    PREFIX = f"r1204g permuted-steps-{_k} "
X = np.hstack([c["emb"], c["rules"], STEPS])  # the current head's input (421)
D = X.shape[1]
SCOLS = np.arange(D - 14, D) + 1  # steps columns in w (w[0] is the bias)
L2 = bench.LEARNED_L2


def fit(tr, pen_cols, w0=None, nonneg=None, rank_w=1.0, hold=None):
    """bench.fit_head on rows ``tr`` with a per-column penalty (len D, bias unpenalised):
    log loss + GSM8K ranking term at weight 1 (closed form, as gsm8k_bag_gate_steps.fit).
    ``nonneg``: w-indices constrained >= 0 (active set). ``rank_w``: the ranking term's
    weight (1 everywhere before gsm8k_nonneg_rank.py; the default leaves every fit as it was).
    ``hold``: ``(w, idx)``, the w-indices ``idx`` held at ``w[idx]`` and not refitted
    (gsm8k_steps_rank3.py; None, the default, holds none: every earlier fit as it was)."""
    x, y = X[tr], Y[tr]
    n = len(x)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-12] = 1.0
    z = np.hstack([np.ones((n, 1)), (x - mean) / scale])
    gpos = np.where(IS_G[tr])[0]
    g = GAIN[tr][gpos]
    above = (g[:, None] > g[None, :]).astype(float)
    C = rank_w * above * (len(gpos) / above.sum())
    zg = z[gpos]
    pen = np.concatenate([[0.0], pen_cols])

    def newton(w, fixed):
        free = np.ones(len(w), bool)
        free[list(fixed)] = False
        w = w.copy()
        w[~free] = 0.0
        if hold is not None:
            free[hold[1]] = False
            w[hold[1]] = hold[0][hold[1]]
        for _ in range(60):
            p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
            grad = z.T @ (p - y)
            hess = (z * (p * (1 - p))[:, None]).T @ z
            s = zg @ w
            d = np.clip(s[:, None] - s[None, :], -30, 30)
            q = 1 / (1 + np.exp(-d))
            m = C * (1 - q)
            grad = grad - zg.T @ (m.sum(1) - m.sum(0))
            h = C * q * (1 - q)
            hess = hess + zg.T @ (np.diag(h.sum(1) + h.sum(0)) - h - h.T) @ zg
            data_grad = grad.copy()
            grad = grad + pen * w
            hess = hess + np.diag(pen)
            step = np.zeros(len(w))
            step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return w, data_grad + pen * w

    w = np.zeros(D + 1) if w0 is None else w0.copy()
    if hold is not None and w0 is None:
        w[hold[1]] = hold[0][hold[1]]
    if nonneg is None:
        w, _ = newton(w, set())
        return w, mean, scale
    fixed: set = set()
    for _ in range(40):
        w, grad = newton(w, fixed)
        neg = [j for j in nonneg if j not in fixed and w[j] < -1e-10]
        if neg:
            fixed.add(min(neg, key=lambda j: w[j]))  # the most negative first
            continue
        release = [j for j in fixed if grad[j] < -1e-9]  # objective falls if w_j grows
        if not release:
            break
        fixed.discard(min(release, key=lambda j: grad[j]))
    FIXED.append(len(fixed))
    return w, mean, scale


def logit(model, rows_idx):
    w, mean, scale = model
    return w[0] + ((X[rows_idx] - mean) / scale) @ w[1:]


def pens(steps_l2):
    p = np.full(D, L2)
    p[-14:] = steps_l2
    return p


CHOSEN: list = []
FIXED: list = []


def current(seed):
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        s[te] = logit(fit(tr, pens(L2)), te)
    return s


GRID = (3000.0, 300.0, 30.0, 3.0)


def group_l2(seed):
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        res = {l2: [] for l2 in GRID}
        for j in np.unique(fold[tr]):
            fi, held = tr[fold[tr] != j], tr[(fold[tr] == j) & OPEN[tr]]
            w0 = None
            for l2 in GRID:  # warm start down the grid
                m = fit(fi, pens(l2), w0)
                w0 = m[0]
                res[l2].append(gain_auc(WEAK[held], STRONG[held], logit(m, held)))
        best = max(GRID, key=lambda l2: np.mean(res[l2]))
        CHOSEN.append(best)
        s[te] = logit(fit(tr, pens(best)), te)
    return s


def pct(ref, v):
    ref = np.sort(ref)
    return (np.searchsorted(ref, v, "left") + np.searchsorted(ref, v, "right")) / (2 * len(ref))


EST = STEPS[:, 0]


def rank_avg(fit_idx, apply_idx):
    """Head fitted on fit_idx; for the open rows of apply_idx the 50/50 percentile average
    (references: fit_idx's open rows). Returns (head logits of apply_idx, r of its open rows)."""
    m = fit(fit_idx, pens(L2))
    lg = logit(m, apply_idx)
    fo = fit_idx[OPEN[fit_idx]]
    ao = OPEN[apply_idx]
    r = 0.5 * pct(logit(m, fo), lg[ao]) + 0.5 * pct(EST[fo], EST[apply_idx][ao])
    return lg, r


def platt(r, y):
    """sigmoid(a + b r), unpenalised logistic regression by Newton."""
    z = np.column_stack([np.ones(len(r)), r])
    w = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(z @ w)))
        step = np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z, z.T @ (p - y))
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


PLATT: list = []


def rankavg_platt(seed):
    """Returns probabilities (the others return logits)."""
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        rr, yy = [], []
        for j in np.unique(fold[tr]):
            fi, held = tr[fold[tr] != j], tr[fold[tr] == j]
            _, r = rank_avg(fi, held)
            rr.append(r)
            yy.append(Y[held][OPEN[held]])
        a, b = platt(np.concatenate(rr), np.concatenate(yy))
        PLATT.append((round(a, 2), round(b, 2)))
        lg, r = rank_avg(tr, te)
        p = 1 / (1 + np.exp(-np.clip(lg, -30, 30)))
        p[OPEN[te]] = 1 / (1 + np.exp(-(a + b * r)))
        s[te] = p
    return s


NONNEG = list(SCOLS)


def nonneg_steps(seed):
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        s[te] = logit(fit(tr, pens(30.0), nonneg=NONNEG), te)
    return s


GROUPS = {
    "current": current,
    "group-l2": group_l2,
    "rankavg-platt": rankavg_platt,
    "nonneg-steps": nonneg_steps,
}
PROB = {"rankavg-platt"}


# Added AFTER the four above had been measured (descriptive ablations of nonneg-steps, not
# candidates): the same steps L2 of 30 without the constraint; and PERMUTE_STEPS=k, the
# steps features shuffled among the GSM8K prompts (seed k) before any fit, as in
# gsm8k_bag_gate_steps.py (a gain that survives it points at the pipeline).
def steps_l2_30(seed):
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        s[te] = logit(fit(tr, pens(30.0)), te)
    return s


GROUPS["steps-l2-30"] = steps_l2_30


def run(name):
    t = time.perf_counter()
    CHOSEN.clear()
    PLATT.clear()
    FIXED.clear()
    runs = []
    for seed in SEEDS:
        runs.append(GROUPS[name](seed))
        print(f"   seed {seed} done ({time.perf_counter() - t:.0f} s)", flush=True)
    runs = np.asarray(runs)
    report(PREFIX + name + TAG, rows, runs)
    extra = f", L2 chosen {sorted(CHOSEN)}" if CHOSEN else ""
    extra += f", Platt (a, b) {PLATT[:5]}..." if PLATT else ""
    extra += f", steps weights held at 0 per fit {FIXED}" if FIXED else ""
    print(f"   ({time.perf_counter() - t:.0f} s{extra})", flush=True)


def calib(prefix, name):
    """bench.calibration_error at the first seed of the runs, per source."""
    from gsm8k_common import load_scores

    s = load_scores(prefix + name + TAG)[0]
    p = s if name in PROB else 1 / (1 + np.exp(-np.clip(s, -30, 30)))
    out = []
    for fam in ("gsm8k", "mmlu"):
        idx = [i for i, r in enumerate(rows) if r["family"] == fam]
        out.append(bench.calibration_error([rows[i] for i in idx], [p[i] for i in idx]))
    return out


def compare():
    from gsm8k_common import load_scores, summary, versus

    g = np.where(IS_G)[0]
    m = np.where(~IS_G)[0]
    base = load_scores("r1204g current" + TAG)  # the real current head, always
    names = [(PREFIX, n) for n in GROUPS]
    if not os.environ.get("PERMUTE_STEPS"):
        names += [(f"r1204g permuted-steps-{k} ", n) for k in range(3) for n in GROUPS]
    for prefix, name in names:
        try:
            runs = load_scores(prefix + name + TAG)
        except FileNotFoundError:
            continue
        vg, vm, diff, won, (lo, hi, p), (auc, auc0, alo, ahi) = versus(
            WEAK, STRONG, g, m, runs, base
        )
        cg, cm = calib(prefix, name)
        print(
            f"| {prefix[7:]}{name}{TAG} | {summary(vg)} | {vm:.1%} | "
            f"{diff:+.1%} ({won}/{len(vg)}; {lo:+.1%} to {hi:+.1%}, P(>0) {p:.2f}) | "
            f"{auc:.3f} vs {auc0:.3f} ({alo:+.3f} to {ahi:+.3f}) | {cg:.3f} / {cm:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["compare"]:
        compare()
    else:
        for a in args:
            run(a)
