"""Smart routing: train the rules classifier, and measure cost vs accuracy and speed.

    python bench/smart_routing.py --train      # fit on the whole dev set -> core/smart_rules.json
                                               # and (with the smart extra) core/smart_learned.json;
                                               # --model-dir DIR writes them there instead
    python bench/smart_routing.py              # cross-validated curves + timing (make bench)
    python bench/smart_routing.py --seeds 10   # + the savings' mean and spread over 10 fold seeds

The data is ../shared/data/routing/dev.jsonl (its README; --data or $ROUTING_DEV elsewhere): prompts from GSM8K and MMLU with
whether a weak and a strong model answered each correctly. The label a classifier learns is
"the strong model is needed": the weak one was wrong and the strong one right. Its score is
the calibrated probability of that label (a logistic model), so 0.3 means the same for
every prompt.

Cross-validation, by source, so every score is of a prompt the classifier was not trained
on: MMLU prompts are folded by subject (a test fold holds only subjects the training folds
lack, as a customer's traffic would be new), GSM8K prompts in 5 random folds. The curve is
cost against accuracy when the top-scored X % of prompts go to the strong model and the
rest to the weak one, with the weak model priced at 1/20 of the strong; random routing is
the straight line between the two models. Pure Python: no numpy in the default install.
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import smart_steps  # noqa: E402
from core.smart import SmartPolicy  # noqa: E402
from gateway.dataplane import smart  # noqa: E402

DATA = Path(
    os.environ.get("ROUTING_DEV") or ROOT.parent / "shared" / "data" / "routing" / "dev.jsonl"
)
WEAK_PRICE = 1 / 20  # of the strong model's
QUALITY = 0.95  # RouteLLM's anchor: 95 % of the strong model's accuracy
ANCHORS = {"gsm8k": 0.35, "mmlu": 0.45}  # RouteLLM's cost savings at that quality
L2 = 1.0
FOLDS = 5


def load(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        r["y"] = 1 if (not r["weak_correct"] and r["strong_correct"]) else 0
        r["family"] = r["source"].split("/")[0]
    return rows


def body_of(prompt: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}]}


# ------------------------------------------------------------------------------ logistic model
def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (a small, positive definite system)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[piv] = m[piv], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def fit(xs: list[list[float]], ys: list[int]) -> dict:
    """L2-regularised logistic regression by Newton's method on standardised features."""
    d = len(xs[0])
    mean = [statistics.fmean(x[j] for x in xs) for j in range(d)]
    scale = [statistics.pstdev([x[j] for x in xs]) or 1.0 for j in range(d)]
    zs = [[1.0] + [(x[j] - mean[j]) / scale[j] for j in range(d)] for x in xs]
    w = [0.0] * (d + 1)
    for _ in range(25):
        grad = [0.0] * (d + 1)
        hess = [[0.0] * (d + 1) for _ in range(d + 1)]
        for z, y in zip(zs, ys, strict=True):
            t = sum(wi * zi for wi, zi in zip(w, z, strict=True))
            p = 1 / (1 + math.exp(-max(-30.0, min(30.0, t))))
            g, h = p - y, p * (1 - p)
            for i in range(d + 1):
                grad[i] += g * z[i]
                hz = h * z[i]
                row = hess[i]
                for j in range(i, d + 1):
                    row[j] += hz * z[j]
        for i in range(d + 1):
            for j in range(i):
                hess[i][j] = hess[j][i]
            if i:  # the intercept is not penalised
                grad[i] += L2 * w[i]
                hess[i][i] += L2
        step = _solve(hess, grad)
        w = [wi - si for wi, si in zip(w, step, strict=True)]
        if max(abs(s) for s in step) < 1e-8:
            break
    return {"bias": w[0], "weights": w[1:], "mean": mean, "scale": scale}


def fit_np(x, ys, l2, pairs=None, nonneg=()) -> dict:
    """The same logistic model with numpy (the learned head: ~400 features).

    ``pairs``, if given, is ``(a, b, weight)``: row indices such that row ``a[i]`` should
    score above row ``b[i]``, and the weight of that ranking term. A logistic loss on each
    pair's score difference is added to the objective, scaled to weigh ``weight`` times as
    much as the log loss of the rows it ranks (see ``ranking_pairs``). The objective stays
    convex, so Newton's method finds its one minimum.

    ``l2``: one penalty for every weight, or one per feature (the bias is never penalised).
    ``nonneg``: feature indices whose weights are kept >= 0, by an active set: Newton on the
    free weights, the most negative constrained one held at 0 and the fit redone, a held one
    released when the objective falls as it grows (a convex problem: the active set's
    optimum is the constrained one)."""
    import numpy as np

    y = np.asarray(ys, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    penalty = np.zeros(z.shape[1])
    penalty[1:] = l2
    ranked = None
    if pairs is not None and len(pairs[0]):
        a, b, pair_scale = pairs
        # The pairs' terms summed over the rows they rank (a few hundred), not over the
        # pairs (tens of thousands): the gradient's sum of (1 - q)(z_a - z_b) is
        # zr' (out - in), and the Hessian's sum of q(1 - q)(z_a - z_b)(z_a - z_b)' is
        # zr' L zr, L the pairs' Laplacian weighted by q(1 - q). The bias cancels in
        # z_a - z_b. The same objective as summing over the pairs, about 5x faster.
        ranked, local = np.unique(np.concatenate([a, b]), return_inverse=True)
        la, lb = local[: len(a)], local[len(a) :]
        zr, m = z[ranked], len(ranked)

    def newton(w, held):
        """Newton on the free weights (``held`` stay 0); the weights and the gradient."""
        free = np.ones(len(w), bool)
        free[list(held)] = False
        w = w.copy()
        w[~free] = 0.0
        for _ in range(50):
            p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
            grad = z.T @ (p - y) + penalty * w
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
            if ranked is not None:
                s = zr @ w
                q = 1 / (1 + np.exp(-np.clip(s[la] - s[lb], -30, 30)))  # P(a ranked above b)
                g, h = 1 - q, q * (1 - q)
                grad -= pair_scale * (zr.T @ (np.bincount(la, g, m) - np.bincount(lb, g, m)))
                lap = np.diag(np.bincount(la, h, m) + np.bincount(lb, h, m))
                np.add.at(lap, (la, lb), -h)
                np.add.at(lap, (lb, la), -h)
                hess += pair_scale * (zr.T @ lap @ zr)
            if free.all():
                step = np.linalg.solve(hess, grad)
            else:
                step = np.zeros(len(w))
                step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return w, grad

    w, grad = newton(w, set())
    constrained = [j + 1 for j in nonneg]  # indices into w (w[0] is the bias)
    held: set = set()
    for _ in range(40 if constrained else 0):
        negative = [j for j in constrained if j not in held and w[j] < -1e-10]
        if negative:
            held.add(min(negative, key=lambda j: w[j]))  # the most negative first
        else:
            # the gradient at the last step's start: exact enough at convergence
            release = [j for j in held if grad[j] < -1e-9]  # the objective falls as w_j grows
            if not release:
                break
            held.discard(min(release, key=lambda j: grad[j]))
        w, grad = newton(w, held)
    return {
        "bias": float(w[0]),
        "weights": w[1:].tolist(),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
    }


# The learned head's ranking term on the open maths problems (GSM8K), at the weight fixed
# before it was measured (docs/smart-routing.md, "The ranking term"): for every pair of
# training problems where the strong model adds more to one than to the other (strong
# correct - weak correct: +1 / 0 / -1), a logistic loss on their score difference, weighed
# as much in all as those problems' own log loss.
PAIRWISE_WEIGHT = 1.0


def ranking_pairs(rows: list[dict], weight: float = PAIRWISE_WEIGHT):
    """``fit_np``'s ``pairs`` for the GSM8K rows of ``rows`` (indices into ``rows``)."""
    import numpy as np

    idx = np.array([i for i, r in enumerate(rows) if r["family"] == "gsm8k"], dtype=np.int64)
    if weight == 0 or len(idx) < 2:
        return None
    gain = np.array([int(rows[i]["strong_correct"]) - int(rows[i]["weak_correct"]) for i in idx])
    a, b = np.nonzero(gain[:, None] > gain[None, :])
    if not len(a):
        return None
    return idx[a], idx[b], weight * len(idx) / len(a)


# The steps features' weights (the head's last columns) are kept >= 0: each count is one
# more thing to work out, never less (a direction fixed from first principles), the
# constraint taking the place of their shrinkage, so their L2 is small (fixed beforehand;
# docs/smart-routing.md, "nonneg-steps"). The other weights' L2 is ``l2``.
STEPS_L2 = 30.0


def fit_head(rows: list[dict], x, l2: float, ranking: float = PAIRWISE_WEIGHT) -> dict:
    """The learned head's weights on ``rows`` (their feature matrix ``x``): log loss +
    ranking term at weight ``ranking``, the steps weights >= 0 (their L2 STEPS_L2)."""
    import numpy as np

    k = len(smart_steps.NAMES)
    pairs = ranking_pairs(rows, ranking)
    if x.shape[1] <= k:  # not the head's matrix (a test's few columns): no steps columns
        return fit_np(x, [r["y"] for r in rows], l2, pairs)
    penalty = np.full(x.shape[1], l2)
    penalty[-k:] = STEPS_L2
    nonneg = range(x.shape[1] - k, x.shape[1])
    return fit_np(x, [r["y"] for r in rows], penalty, pairs, nonneg)


# The maths weights: the same fit with the ranking term at weight 3, which orders GSM8K
# problems better (37.0 % against 34.8 % over 30 fold seeds) and chat and MMLU worse, so it
# reads maths-shaped requests only (smart.maths_shaped), carried to the main weights' scale
# (smart_learned.carry; bench/experiments/README.md, "The maths head", its rule and result).
MATHS_RANKING_WEIGHT = 3.0


def maths_mask(feats: list[list[float]], x) -> list[bool]:
    """Which rows are maths-shaped (``feats``: their rules features, ``x``: the learned
    matrix, whose last columns are the steps features)."""
    k = len(smart_steps.NAMES)
    return [smart.maths_shaped(f, list(x[i, -k:])) for i, f in enumerate(feats)]


def fit_learned(rows: list[dict], x, l2: float, mask: list[bool] | None = None) -> dict:
    """The learned head: the main weights (fit_head) and, when ``mask`` marks maths-shaped
    rows, the maths weights and the percentiles that carry them to the main scale."""
    import numpy as np

    head = fit_head(rows, x, l2)
    idx = [i for i, m in enumerate(mask or ()) if m]
    if len(idx) < 2:
        return head
    maths = fit_head(rows, x, l2, MATHS_RANKING_WEIGHT)
    xs = (x[idx] - np.asarray(head["mean"])) / np.asarray(head["scale"])
    src = np.percentile(maths["bias"] + xs @ np.asarray(maths["weights"]), range(101))
    dst = np.percentile(head["bias"] + xs @ np.asarray(head["weights"]), range(101))
    # strictly increasing, for the interpolation (equal scores would tie percentiles)
    src = src + 1e-9 * np.arange(101)
    head["maths"] = {
        "bias": maths["bias"],
        "weights": maths["weights"],
        "from": src.tolist(),
        "to": dst.tolist(),
        "ranking_weight": MATHS_RANKING_WEIGHT,
    }
    return head


# Added to the log-odds of a chat-shaped request (gateway.dataplane.smart.chat_shaped) under
# this head: set on bench/experiments/chat_blind_2026-12-04.jsonl by the rule fixed before
# it was scored (bench/experiments/README.md, chat_raise_select.py). Not a figure of the
# development set, which has no chat-shaped prompt: re-set it when the head changes.
CHAT_RAISE = 0.2
LEARNED_L2 = 3000.0  # what the nested cross-validation below picks most (docs/benchmarks.md)
L2_GRID = (100.0, 300.0, 1000.0, 3000.0, 10000.0)


def learned_matrix(rows: list[dict], feats: list[list[float]]):
    import numpy as np

    from core import smart_learned

    return np.stack(
        [
            smart_learned.features(r["prompt"], f, smart.steps_features(body_of(r["prompt"]), f))
            for r, f in zip(rows, feats, strict=True)
        ]
    )


def learned_scores(x, model: dict, mask: list[bool] | None = None) -> list[float]:
    """The head's scores of ``x``'s rows (``mask``: which are maths-shaped)."""
    import numpy as np

    from core import smart_learned

    parts = [(model, ("weights", "mean", "scale"))]
    if "maths" in model:
        parts.append((model["maths"], ("weights", "from", "to")))
    for part, names in parts:
        for name in names:
            part[name + "_array"] = np.asarray(part[name])
    mask = mask or [False] * len(x)
    out = [smart_learned.score_vector(row, model, maths=m) for row, m in zip(x, mask, strict=True)]
    for part, names in parts:
        for name in names:
            del part[name + "_array"]
    return out


def learned_available() -> bool:
    from core import smart_learned

    return smart_learned._model_zip() is not None and _has_numpy()


def _has_numpy() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def quantile_table(scores: list[float]) -> list[float]:
    s = sorted(scores)
    return [round(s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))], 6) for q in range(101)]


def train(rows: list[dict]) -> dict:
    xs = [smart.features(body_of(r["prompt"])) for r in rows]
    model = fit(xs, [r["y"] for r in rows])
    # The range each feature had here: the gateway reads a prompt's features within it.
    model["low"] = [min(column) for column in zip(*xs, strict=True)]
    model["high"] = [max(column) for column in zip(*xs, strict=True)]
    scores = [smart.score_features(x, model) for x in xs]
    model["quantiles"] = quantile_table(scores)
    model["features"] = list(smart.FEATURE_NAMES)
    model["label"] = "weak model wrong and strong model right"
    model["trained_on"] = f"{DATA.name}: {len(rows)} prompts"
    return model


# ------------------------------------------------------------------------------ evaluation
def folds(rows: list[dict], seed: int = 0) -> list[int]:
    """A fold number per row: MMLU by subject, GSM8K at random."""
    rng = random.Random(seed)
    subjects = sorted({r["source"] for r in rows if r["family"] == "mmlu"})
    rng.shuffle(subjects)
    by_subject = {s: i % FOLDS for i, s in enumerate(subjects)}
    return [
        by_subject[r["source"]] if r["family"] == "mmlu" else rng.randrange(FOLDS) for r in rows
    ]


def out_of_fold_scores(rows: list[dict], feats: list[list[float]], seed: int = 0) -> list[float]:
    fold = folds(rows, seed)
    scores = [0.0] * len(rows)
    for k in range(FOLDS):
        train_idx = [i for i in range(len(rows)) if fold[i] != k]
        model = fit([feats[i] for i in train_idx], [rows[i]["y"] for i in train_idx])
        for i in range(len(rows)):
            if fold[i] == k:
                scores[i] = smart.score_features(feats[i], model)
    return scores


def _log_loss(ys, ps) -> float:
    return -sum(
        math.log(max(p, 1e-12)) if y else math.log(max(1 - p, 1e-12))
        for y, p in zip(ys, ps, strict=True)
    ) / len(ys)


def out_of_fold_learned(
    rows: list[dict], x, mask: list[bool] | None = None
) -> tuple[list[float], list[float]]:
    """Out-of-fold scores with the head's regularisation chosen *inside* each training
    split (nested: its own folds, by the main weights' log loss), so no choice sees the
    test fold; and the L2 each outer fold chose. ``mask``: the maths-shaped rows."""
    fold = folds(rows)
    scores = [0.0] * len(rows)
    chosen = []
    for k in range(FOLDS):
        train_idx = [i for i in range(len(rows)) if fold[i] != k]
        test_idx = [i for i in range(len(rows)) if fold[i] == k]
        losses = {}
        for l2 in L2_GRID:
            inner = []
            for j in {fold[i] for i in train_idx}:
                fit_idx = [i for i in train_idx if fold[i] != j]
                held = [i for i in train_idx if fold[i] == j]
                model = fit_head([rows[i] for i in fit_idx], x[fit_idx], l2)
                inner += list(
                    zip([rows[i]["y"] for i in held], learned_scores(x[held], model), strict=True)
                )
            losses[l2] = _log_loss([y for y, _ in inner], [p for _, p in inner])
        best = min(losses, key=losses.get)
        chosen.append(best)
        model = fit_learned(
            [rows[i] for i in train_idx], x[train_idx], best, _rows_of(mask, train_idx)
        )
        got = learned_scores(x[test_idx], model, _rows_of(mask, test_idx))
        for i, s in zip(test_idx, got, strict=True):
            scores[i] = s
    return scores, chosen


def _rows_of(mask: list[bool] | None, idx: list[int]) -> list[bool] | None:
    return None if mask is None else [mask[i] for i in idx]


def out_of_fold_fixed(
    rows: list[dict], x, l2: float, seed: int, ranking: bool = False, mask=None
) -> list[float]:
    """Out-of-fold scores of a logistic model (numpy) at a fixed regularisation, for the
    seed sweep: the learned head's nested choice above is too slow to repeat per seed, and
    picks LEARNED_L2 mostly."""
    fold = folds(rows, seed)
    scores = [0.0] * len(rows)
    for k in range(FOLDS):
        train_idx = [i for i in range(len(rows)) if fold[i] != k]
        test_idx = [i for i in range(len(rows)) if fold[i] == k]
        sub = [rows[i] for i in train_idx]
        if ranking:  # the learned head
            model = fit_learned(sub, x[train_idx], l2, _rows_of(mask, train_idx))
        else:
            model = fit_np(x[train_idx], [r["y"] for r in sub], l2)
        got = learned_scores(x[test_idx], model, _rows_of(mask, test_idx) if ranking else None)
        for i, s in zip(test_idx, got, strict=True):
            scores[i] = s
    return scores


def seed_sweep(rows: list[dict], feats: list[list[float]], x, seeds: int) -> dict:
    """Each source's saving at QUALITY over ``seeds`` fold assignments (0..seeds-1): with
    only 400 GSM8K prompts (80 a test fold) one seed's figure moves by several points."""
    out = {}
    per_seed = {"rules": [], "learned": []}
    rules_x = None
    if x is not None:  # numpy is there: the same rules model (L2), fitted faster
        import numpy as np

        rules_x = np.asarray(feats, dtype=np.float64)
        mask = maths_mask(feats, x)
    for seed in range(seeds):
        if rules_x is None:
            per_seed["rules"].append(out_of_fold_scores(rows, feats, seed))
        else:
            per_seed["rules"].append(out_of_fold_fixed(rows, rules_x, L2, seed))
        if x is not None:
            per_seed["learned"].append(
                out_of_fold_fixed(rows, x, LEARNED_L2, seed, ranking=True, mask=mask)
            )
    for family in ("gsm8k", "mmlu"):
        idx = [i for i, r in enumerate(rows) if r["family"] == family]
        sub = [rows[i] for i in idx]
        out[family] = {}
        for name, runs in per_seed.items():
            if runs:
                savings = [saving_at_quality(sub, [s[i] for i in idx]) for s in runs]
                out[family][name] = {
                    "mean": round(statistics.fmean(savings), 4),
                    "sd": round(statistics.pstdev(savings), 4),
                    "per_seed": [round(v, 4) for v in savings],
                }
    return out


def curve(rows: list[dict], scores: list[float], steps: int = 20) -> list[dict]:
    """(share to strong, relative cost, accuracy) when the top-scored go to the strong model."""
    order = sorted(range(len(rows)), key=lambda i: -scores[i])
    n = len(rows)
    out = []
    for s in range(steps + 1):
        k = round(n * s / steps)
        strong = set(order[:k])
        correct = sum(
            rows[i]["strong_correct"] if i in strong else rows[i]["weak_correct"] for i in range(n)
        )
        share = k / n
        out.append(
            {"share": share, "cost": share + (1 - share) * WEAK_PRICE, "accuracy": correct / n}
        )
    return out


def saving_at_quality(rows: list[dict], scores: list[float]) -> float:
    """1 - relative cost of the cheapest split reaching QUALITY x the strong model's
    accuracy (exact: every k from 0 to n)."""
    n = len(rows)
    target = QUALITY * sum(r["strong_correct"] for r in rows) / n
    order = sorted(range(n), key=lambda i: -scores[i])
    correct = sum(r["weak_correct"] for r in rows)
    for k in range(n + 1):
        if correct / n >= target - 1e-12:
            share = k / n
            return 1 - (share + (1 - share) * WEAK_PRICE)
        i = order[k]
        correct += rows[i]["strong_correct"] - rows[i]["weak_correct"]
    return 0.0


def calibration_error(rows: list[dict], scores: list[float], bins: int = 10) -> float:
    """Expected calibration error: over score deciles, how far the mean score is from the
    share of prompts that needed the strong model, weighted by size (0 is perfect)."""
    order = sorted(range(len(rows)), key=lambda i: scores[i])
    total = 0.0
    for b in range(bins):
        part = order[b * len(order) // bins : (b + 1) * len(order) // bins]
        if part:
            mean = sum(scores[i] for i in part) / len(part)
            rate = sum(rows[i]["y"] for i in part) / len(part)
            total += abs(mean - rate) * len(part)
    return total / len(rows)


def random_saving(rows: list[dict]) -> float:
    """Random routing's expected saving at the same quality (a straight line)."""
    n = len(rows)
    weak = sum(r["weak_correct"] for r in rows) / n
    strong = sum(r["strong_correct"] for r in rows) / n
    target = QUALITY * strong
    share = 0.0 if weak >= target else (target - weak) / (strong - weak)
    return 1 - (share + (1 - share) * WEAK_PRICE)


def timing(
    rows: list[dict], tokens: int = 1000, runs: int = 2000, learned=False, family: str = ""
) -> dict:
    """Per-request cost of a score on a prompt of about ``tokens`` tokens (4 characters
    a token), the first call (loading) excluded. The prompt joins the set's prompts (of
    ``family`` only, if given): the first ones are multiple choice, which the learned
    classifier's steps features skip, so "gsm8k" times an open problem's, the parse
    included."""
    text = ""
    pool = [r["prompt"] for r in rows if not family or r["family"] == family]
    i = 0
    while len(text) < tokens * 4:
        text += pool[i % len(pool)] + "\n"
        i += 1
    body = body_of(text[: tokens * 4])
    policy = SmartPolicy(tiers=("a", "b"), thresholds=(0.5,))
    classifier = "learned" if learned else "rules"
    rss, started = _rss_mb(), time.perf_counter()
    smart.score(policy, body, classifier)
    load_s, load_mb = time.perf_counter() - started, _rss_mb() - rss
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        smart.score(policy, body, classifier)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "first_call_s": round(load_s, 3),  # loading, for the learned classifier
        "first_call_rss_mb": round(load_mb, 1),  # what loading added to this process
        "prompt_chars": len(text[: tokens * 4]),
        "p50_ms": round(times[len(times) // 2], 4),
        "p99_ms": round(times[int(len(times) * 0.99)], 4),
    }


def _rss_mb() -> float:
    """This process's resident memory (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help=f"default: {DATA}")
    parser.add_argument(
        "--train",
        action="store_true",
        help="fit on the whole set: write smart_rules.json and (with the smart extra) "
        "smart_learned.json into --model-dir",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=ROOT / "core",
        help="where --train writes the models (default: core/, what the gateway reads)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--seeds", type=int, default=1, help="also report savings over this many fold seeds"
    )
    args = parser.parse_args(argv)
    rows = load(args.data)
    if args.train:
        model = train(rows)
        args.model_dir.mkdir(parents=True, exist_ok=True)
        path = args.model_dir / "smart_rules.json"
        path.write_text(json.dumps(model, indent=1) + "\n")
        print(f"wrote {path}")
        if learned_available():
            feats = [smart.features(body_of(r["prompt"])) for r in rows]
            x = learned_matrix(rows, feats)
            mask = maths_mask(feats, x)
            head = fit_learned(rows, x, LEARNED_L2, mask)
            head["quantiles"] = quantile_table(learned_scores(x, head, mask))
            # The steps features' range here: the gateway reads a prompt's within it, as
            # the rules features' (their range is the rules model's low and high).
            steps = x[:, -len(smart_steps.NAMES) :]
            head["steps_features"] = list(smart_steps.NAMES)
            head["steps_low"] = steps.min(axis=0).tolist()
            head["steps_high"] = steps.max(axis=0).tolist()
            head["label"] = model["label"]
            head["l2"] = LEARNED_L2
            head["ranking_weight"] = PAIRWISE_WEIGHT
            head["steps_l2"] = STEPS_L2
            head["steps_nonneg"] = True
            head["chat_raise"] = CHAT_RAISE
            head["trained_on"] = model["trained_on"]
            path = args.model_dir / "smart_learned.json"
            path.write_text(json.dumps(head) + "\n")
            print(f"wrote {path}")
        else:
            print("the smart extra is not installed: the learned head was not trained")
        return 0
    feats = [smart.features(body_of(r["prompt"])) for r in rows]
    oof = out_of_fold_scores(rows, feats)
    results = {"classifiers": {}, "timing_rules_1000_tokens": timing(rows)}
    learned_oof = x = None
    if learned_available():
        # Timed first, so that its first call is the load (the model, once per process).
        results["timing_learned_1000_tokens"] = timing(rows, learned=True)
        results["timing_learned_open_1000_tokens"] = timing(rows, learned=True, family="gsm8k")
        x = learned_matrix(rows, feats)
        learned_oof, results["learned_l2_per_fold"] = out_of_fold_learned(
            rows, x, maths_mask(feats, x)
        )
    if args.seeds > 1:
        results["seed_sweep"] = seed_sweep(rows, feats, x, args.seeds)
    for family in ("gsm8k", "mmlu"):
        idx = [i for i, r in enumerate(rows) if r["family"] == family]
        sub = [rows[i] for i in idx]
        results["classifiers"][family] = {
            "prompts": len(sub),
            "weak_accuracy": round(sum(r["weak_correct"] for r in sub) / len(sub), 4),
            "strong_accuracy": round(sum(r["strong_correct"] for r in sub) / len(sub), 4),
            "routellm_saving": ANCHORS[family],
            "rules_saving": round(saving_at_quality(sub, [oof[i] for i in idx]), 4),
            "random_saving": round(random_saving(sub), 4),
            "rules_curve": curve(sub, [oof[i] for i in idx]),
            "rules_calibration_error": round(calibration_error(sub, [oof[i] for i in idx]), 4),
        }
        if learned_oof is not None:
            results["classifiers"][family]["learned_saving"] = round(
                saving_at_quality(sub, [learned_oof[i] for i in idx]), 4
            )
            results["classifiers"][family]["learned_curve"] = curve(
                sub, [learned_oof[i] for i in idx]
            )
            results["classifiers"][family]["learned_calibration_error"] = round(
                calibration_error(sub, [learned_oof[i] for i in idx]), 4
            )
    print(f"{'source':8} {'weak':>6} {'strong':>6}  saving at 95% of strong quality:")
    print(f"{'':8} {'':>6} {'':>6}  {'rules':>7} {'learned':>7} {'random':>7} {'RouteLLM':>8}")
    for family, r in results["classifiers"].items():
        learned = f"{r['learned_saving']:7.1%}" if "learned_saving" in r else f"{'-':>7}"
        print(
            f"{family:8} {r['weak_accuracy']:6.1%} {r['strong_accuracy']:6.1%}  "
            f"{r['rules_saving']:7.1%} {learned} {r['random_saving']:7.1%} "
            f"{r['routellm_saving']:8.0%}"
        )
    for family, r in results["classifiers"].items():
        print(
            f"{family}: calibration error (|mean score - share needing the strong model|, "
            f"by decile) rules {r['rules_calibration_error']:.3f}"
            + (f", learned {r['learned_calibration_error']:.3f}" if "learned_saving" in r else "")
        )
    for family, by_name in results.get("seed_sweep", {}).items():
        print(
            f"{family} over {args.seeds} fold seeds: "
            + ", ".join(
                f"{name} {r['mean']:.1%} ± {r['sd']:.1%} (min {min(r['per_seed']):.1%}, "
                f"max {max(r['per_seed']):.1%})"
                for name, r in by_name.items()
            )
        )
    if "learned_l2_per_fold" in results:
        print(f"learned head's L2, chosen inside each fold: {results['learned_l2_per_fold']}")
    for name in ("rules", "learned", "learned_open"):
        t = results.get(f"timing_{name}_1000_tokens")
        if t:
            what = "learned (open maths problems)" if name == "learned_open" else name
            print(
                f"{what} score, 1,000-token prompt: p50 {t['p50_ms']} ms, p99 {t['p99_ms']} ms; "
                f"first call {t['first_call_s']} s, +{t['first_call_rss_mb']} MB resident"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
