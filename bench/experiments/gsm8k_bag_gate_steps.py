"""Bagging, a maths gate with a GSM8K ranking head, and "reasoning steps" features
(2026-12-04, research; not part of the product).

Same protocol as bench/smart_routing.py --seeds 10: GSM8K in 5 random folds, MMLU by
subject (bench.folds), fold seeds 0-9 (FOLD_SEEDS=10-19 for the fresh check). Every
setting below was fixed in this file before any of it ran; the one choice left open (the
gate head's L2) is made by nested cross-validation inside each training split.

Variants (committed recipe = bench.fit_head: log loss + GSM8K ranking term at weight 1,
L2 3,000, features = static MiniLM mean + the 23 rules features):

  committed     the committed head, re-measured here (fast_fit_head, checked equal to
                bench.fit_head to 1e-6 on a fold: `check`)
  bag25         the committed recipe on 25 bootstrap resamples of each training split
                (drawn within each source, GSM8K and MMLU, so the mix is kept), the 25
                logits averaged
  steps         committed features + the 14 gsm8k_steps features (zero on multiple-choice
                prompts), committed recipe
  gate-rank     a rule fixed beforehand, multiple_choice == 0 (exactly the GSM8K prompts
                here), sends a prompt to a GSM8K head; else the committed head (MMLU is
                unchanged by construction). The GSM8K head: trained on the training split's
                GSM8K prompts only, a pure pairwise (RankNet) objective over every pair where
                the strong model adds more to one (strong - weak, +1/0/-1), features =
                embedding + rules + the 21 arithmetic + the 14 steps features; L2 from
                (100, 300, 1k, 3k, 10k, 30k) by nested CV on the training split's other GSM8K
                folds, criterion the mean gain concordance of the held-out inner folds
  gate-rank-hand the same gate head over the hand-made features only (rules + arithmetic +
                steps, 58 dims), L2 grid (1, 3, 10, 30, 100, 300)
  rankavg-steps the committed logit and the steps estimate (the "steps" count alone, no
                fitting) each as its rank among the GSM8K prompts of the training split
                (percentile), averaged 50/50, for open prompts; the committed score else

  export ROUTING_DEV=.../dev.jsonl GSM8K_EXP_DIR=/tmp/x OMP_NUM_THREADS=1
  ../../.venv/bin/python gsm8k_common.py                   # the feature cache
  ../../.venv/bin/python gsm8k_bag_gate_steps.py check      # fast fit == bench.fit_head
  ../../.venv/bin/python gsm8k_bag_gate_steps.py committed bag25 steps gate-rank \\
      gate-rank-hand rankavg-steps
  ../../.venv/bin/python gsm8k_bag_gate_steps.py compare    # the table
  FOLD_SEEDS=10-19 ...                                      # the fresh-seed check

Needs only numpy (and the smart extra for the feature cache).
"""

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
PREFIX = "r1204 "

Y, WEAK, STRONG = labels(rows)
GAIN = STRONG - WEAK
MC = c["rules"][:, list(smart.FEATURE_NAMES).index("multiple_choice")]
OPEN = MC == 0  # the gate: a rule, fixed beforehand
IS_G = np.array([r["family"] == "gsm8k" for r in rows])
assert (OPEN == IS_G).all()


def steps_matrix():
    path = WORK / "steps.npy"
    if path.exists():
        return np.load(path)
    s = np.asarray([steps_features(r["prompt"], bool(m)) for r, m in zip(rows, MC, strict=True)])
    np.save(path, s)
    return s


STEPS = steps_matrix()
# A sanity check (PERMUTE_STEPS=k): the steps features shuffled among the GSM8K prompts
# (seed k), so they keep their distribution and lose any relation to the prompt. A variant
# that still gains with them points at the pipeline, not the features.
if os.environ.get("PERMUTE_STEPS"):
    _k = int(os.environ["PERMUTE_STEPS"])
    _g = np.where(IS_G)[0]
    STEPS = STEPS.copy()
    STEPS[_g] = STEPS[np.random.default_rng(_k).permutation(_g)]
    PREFIX = f"r1204 permuted-steps-{_k} "
X_COMMITTED = np.hstack([c["emb"], c["rules"]])


# ------------------------------------------------------------------------------ the fitter
def fit(x, y, l2, gidx=None, sample_w=None, logloss=True, pair_weight=1.0):
    """bench.fit_np / fit_head with sample weights (bootstrap multiplicities) and the
    ranking term in closed form over the GSM8K rows (a Laplacian instead of every pair's
    difference row: the same objective, far faster). ``gidx``: row positions (into x) of
    the rows that form ranking pairs; ``logloss`` False: pairs only (RankNet).
    Returns (bias, w, mean, scale) in standardised space, like bench's model."""
    n = len(x)
    sw = np.ones(n) if sample_w is None else np.asarray(sample_w, dtype=float)
    tot = sw.sum()
    mean = (sw[:, None] * x).sum(0) / tot
    var = (sw[:, None] * (x - mean) ** 2).sum(0) / tot
    scale = np.sqrt(var)
    scale[scale < 1e-12] = 1.0
    z = np.hstack([np.ones((n, 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    pen = np.full(z.shape[1], float(l2))
    pen[0] = 0.0 if logloss else float(l2)
    C = None
    if gidx is not None and pair_weight:
        gidx, g = gidx
        wg = sw[gidx]
        above = (g[:, None] > g[None, :]).astype(float) * wg[:, None] * wg[None, :]
        npairs = above.sum()
        if npairs > 0:
            C = above * (pair_weight * wg.sum() / npairs)
            zg = z[gidx]
    for _ in range(60):
        grad = pen * w
        hess = np.diag(pen)
        if logloss:
            p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
            grad = grad + z.T @ (sw * (p - y))
            hess = hess + (z * (sw * p * (1 - p))[:, None]).T @ z
        if C is not None:
            s = zg @ w
            d = np.clip(s[:, None] - s[None, :], -30, 30)
            q = 1 / (1 + np.exp(-d))
            m = C * (1 - q)
            r = m.sum(1) - m.sum(0)
            grad = grad - zg.T @ r
            h = C * q * (1 - q)
            lap = np.diag(h.sum(1) + h.sum(0)) - h - h.T
            hess = hess + zg.T @ lap @ zg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w, mean, scale


def logit(model, x):
    w, mean, scale = model
    return w[0] + ((x - mean) / scale) @ w[1:]


def fast_fit_head(tr, x, l2=bench.LEARNED_L2, sample_w=None):
    """The committed recipe on rows ``tr`` (global indices)."""
    gpos = np.where(IS_G[tr])[0]
    return fit(x[tr], Y[tr], l2, gidx=(gpos, GAIN[tr][gpos]), sample_w=sample_w)


def check():
    fold = fold_array(rows, 0)
    tr = np.where(fold != 0)[0]
    t = time.perf_counter()
    m = bench.fit_head([rows[i] for i in tr], X_COMMITTED[tr], bench.LEARNED_L2)
    t1 = time.perf_counter()
    w, _, _ = fast_fit_head(tr, X_COMMITTED)
    t2 = time.perf_counter()
    ref = np.concatenate([[m["bias"]], m["weights"]])
    print(f"bench {t1 - t:.2f} s, fast {t2 - t1:.2f} s, max |dw| {np.abs(ref - w).max():.2e}")
    # bootstrap weights = duplicated rows
    rng = np.random.default_rng(0)
    cnt = np.bincount(rng.integers(0, len(tr), len(tr)), minlength=len(tr))
    dup = np.repeat(tr, cnt)
    m = bench.fit_head([rows[i] for i in dup], X_COMMITTED[dup], bench.LEARNED_L2)
    w, _, _ = fast_fit_head(tr, X_COMMITTED, sample_w=cnt)
    ref = np.concatenate([[m["bias"]], m["weights"]])
    print(f"weighted vs duplicated rows: max |dw| {np.abs(ref - w).max():.2e}")


# ------------------------------------------------------------------------------ variants
def committed(x, seed):
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        s[te] = logit(fast_fit_head(tr, x), x[te])
    return s


BAGS = 25


def bagged(x, seed):
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        rng = np.random.default_rng(1000 * seed + k)
        acc = np.zeros(len(te))
        for _ in range(BAGS):
            cnt = np.zeros(len(tr))
            for fam in (True, False):  # within each source
                pos = np.where(IS_G[tr] == fam)[0]
                cnt += np.bincount(pos[rng.integers(0, len(pos), len(pos))], minlength=len(tr))
            acc += logit(fast_fit_head(tr, x, sample_w=cnt), x[te])
        s[te] = acc / BAGS
    return s


def rank_head(tr, x, l2):
    """Pure pairwise head on the GSM8K rows ``tr`` (global indices)."""
    return fit(x[tr], Y[tr], l2, gidx=(np.arange(len(tr)), GAIN[tr]), logloss=False)


def inner_choice(tr_g, fold, x, grid):
    """L2 by nested CV on the training split's GSM8K folds: mean held-out gain concordance."""
    res = {}
    for l2 in grid:
        aucs = []
        for j in np.unique(fold[tr_g]):
            fit_i, held = tr_g[fold[tr_g] != j], tr_g[fold[tr_g] == j]
            m = rank_head(fit_i, x, l2)
            aucs.append(gain_auc(WEAK[held], STRONG[held], logit(m, x[held])))
        res[l2] = np.mean(aucs)
    return max(res, key=res.get)


CHOSEN: list = []


def gated(x_g, grid, seed):
    base = committed(X_COMMITTED, seed)
    fold = fold_array(rows, seed)
    s = base.copy()
    for k in range(5):
        tr_g = np.where((fold != k) & OPEN)[0]
        te_g = np.where((fold == k) & OPEN)[0]
        l2 = inner_choice(tr_g, fold, x_g, grid)
        CHOSEN.append(l2)
        s[te_g] = logit(rank_head(tr_g, x_g, l2), x_g[te_g])
    return s


def pct(ref, v):
    ref = np.sort(ref)
    return (np.searchsorted(ref, v, "left") + np.searchsorted(ref, v, "right")) / (2 * len(ref))


def rankavg_steps(seed):
    fold = fold_array(rows, seed)
    est = STEPS[:, 0]  # log1p(steps), the estimate alone
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        m = fast_fit_head(tr, X_COMMITTED)
        s[te] = logit(m, X_COMMITTED[te])
        trg, teg = tr[OPEN[tr]], te[OPEN[te]]
        ref_l = logit(m, X_COMMITTED[trg])
        s[teg] = 0.5 * pct(ref_l, s[teg]) + 0.5 * pct(est[trg], est[teg])
    return s


HAND = np.hstack([c["rules"], c["arith"], STEPS])
GROUPS = {
    "committed": lambda seed: committed(X_COMMITTED, seed),
    "bag25": lambda seed: bagged(X_COMMITTED, seed),
    "steps": lambda seed: committed(np.hstack([X_COMMITTED, STEPS]), seed),
    "gate-rank": lambda seed: gated(
        np.hstack([c["emb"], HAND]), (100.0, 300.0, 1e3, 3e3, 1e4, 3e4), seed
    ),
    "gate-rank-hand": lambda seed: gated(HAND, (1.0, 3.0, 10.0, 30.0, 100.0, 300.0), seed),
    "rankavg-steps": rankavg_steps,
}


# Added AFTER the groups above had been measured on seeds 0-9 (ablations, to see where the
# gain comes from; their settings copy the groups above, nothing new was tuned):
#   steps-alone       the steps estimate itself as the GSM8K score (no fitting at all)
#   gate-rank-arith   gate-rank-hand without the steps features (rules + arithmetic)
#   gate-rank-steps   gate-rank-hand over the 14 steps features only
#   gate-fithead-hand the gate head fitted with the committed objective (log loss + ranking
#                     weight 1) on GSM8K only, hand features, same L2 grid and nested choice
def steps_alone(seed):
    s = committed(X_COMMITTED, seed)
    s[OPEN] = STEPS[OPEN, 0]
    return s


def gated_fithead(x_g, grid, seed):
    base = committed(X_COMMITTED, seed)
    fold = fold_array(rows, seed)
    s = base.copy()

    def head(tr, l2):
        return fit(x_g[tr], Y[tr], l2, gidx=(np.arange(len(tr)), GAIN[tr]))

    for k in range(5):
        tr_g = np.where((fold != k) & OPEN)[0]
        te_g = np.where((fold == k) & OPEN)[0]
        res = {}
        for l2 in grid:
            aucs = []
            for j in np.unique(fold[tr_g]):
                fi, held = tr_g[fold[tr_g] != j], tr_g[fold[tr_g] == j]
                aucs.append(gain_auc(WEAK[held], STRONG[held], logit(head(fi, l2), x_g[held])))
            res[l2] = np.mean(aucs)
        l2 = max(res, key=res.get)
        CHOSEN.append(l2)
        s[te_g] = logit(head(tr_g, l2), x_g[te_g])
    return s


HAND_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
GROUPS.update(
    {
        "steps-alone": steps_alone,
        "gate-rank-arith": lambda seed: gated(np.hstack([c["rules"], c["arith"]]), HAND_GRID, seed),
        "gate-rank-steps": lambda seed: gated(STEPS, HAND_GRID, seed),
        "gate-fithead-hand": lambda seed: gated_fithead(HAND, HAND_GRID, seed),
    }
)
BASE = PREFIX + "committed"


def run(name):
    t = time.perf_counter()
    CHOSEN.clear()
    runs = np.asarray([GROUPS[name](seed) for seed in SEEDS])
    report(PREFIX + name + TAG, rows, runs)
    extra = f", L2 chosen {sorted(CHOSEN)}" if CHOSEN else ""
    print(f"   ({time.perf_counter() - t:.0f} s{extra})", flush=True)


def compare():
    from gsm8k_common import load_scores, summary, versus

    g = np.where(IS_G)[0]
    m = np.where(~IS_G)[0]
    base = load_scores(BASE + TAG)
    for path in sorted((WORK / "scores").glob(PREFIX + "*.npy"), key=lambda p: p.stat().st_mtime):
        name = path.stem
        if not name.endswith(TAG) or (not TAG and name.endswith("]")):
            continue
        vg, vm, diff, won, (lo, hi, p), (auc, auc0, alo, ahi) = versus(
            WEAK, STRONG, g, m, load_scores(name), base
        )
        print(
            f"| {name} | {summary(vg)} | {vm:.1%} | "
            f"{diff:+.1%} ({won}/{len(vg)}; {lo:+.1%} to {hi:+.1%}, P(>0) {p:.2f}) | "
            f"{auc:.3f} vs {auc0:.3f} ({alo:+.3f} to {ahi:+.3f}) |",
            flush=True,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["check"]:
        check()
    elif args == ["compare"]:
        compare()
    else:
        for a in args:
            run(a)
