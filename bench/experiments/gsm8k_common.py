"""Shared pieces of the 2026-12-03 GSM8K experiments (docs/smart-routing.md, "Tried on
2026-12-03"): a feature cache, the bench's folds and logistic head, a fast saving, and the
paired bootstrap. Run from the repo root with the smart extra installed."""

import contextlib
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import smart_routing as bench  # noqa: E402

# ROUTING_DEV: the development set where the clone is not beside ../shared.
bench.DATA = Path(os.environ.get("ROUTING_DEV", bench.DATA))
WORK = Path(os.environ.get("GSM8K_EXP_DIR", tempfile.gettempdir())) / "gsm8k_experiments"
CACHE = WORK / "cache.npz"
SEEDS = range(10)


def build_cache():
    from core import smart_learned
    from gateway.dataplane import smart

    rows = bench.load(bench.DATA)
    tok, table = smart_learned.encoder()
    feats, ids, offs, emb = [], [], [0], []
    for r in rows:
        feats.append(smart.features(bench.body_of(r["prompt"])))
        t = tok.encode(r["prompt"] or " ", add_special_tokens=False).ids
        ids += t
        offs.append(len(ids))
        emb.append(smart_learned.embed(r["prompt"]))
    np.savez(
        CACHE,
        rules=np.asarray(feats),
        ids=np.asarray(ids, dtype=np.int32),
        offs=np.asarray(offs),
        emb=np.asarray(emb, dtype=np.float64),
        arith=np.asarray([arithmetic(r["prompt"]) for r in rows]),
    )


def data():
    if not CACHE.exists():
        build_cache()
    rows = bench.load(bench.DATA)
    c = np.load(CACHE)
    return rows, {k: c[k] for k in c.files}


NUMBER_WORDS = set(
    [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "fifteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "hundred",
        "thousand",
        "half",
        "third",
        "quarter",
        "double",
        "triple",
        "dozen",
    ]
)
UNITS = set(
    [
        "minutes",
        "minute",
        "hours",
        "hour",
        "days",
        "day",
        "weeks",
        "week",
        "months",
        "month",
        "years",
        "year",
        "seconds",
        "miles",
        "mile",
        "feet",
        "foot",
        "inches",
        "inch",
        "meters",
        "kilometers",
        "pounds",
        "ounces",
        "gallons",
        "liters",
        "cups",
        "pages",
        "cents",
        "dollars",
    ]
)


def arithmetic(p: str) -> list[float]:
    """21 surface features of an open maths problem (as the 2026-12-01 list describes)."""
    low = p.lower()
    words = re.findall(r"[a-z']+", low)
    nums = re.findall(r"\d[\d,]*(?:\.\d+)?", p)
    values = []
    for n in nums:
        with contextlib.suppress(ValueError):
            values.append(float(n.replace(",", "")))
    sents = [s for s in re.split(r"[.?!]\s", p) if s.strip()]
    question = sents[-1] if sents else p
    names = re.findall(r"(?<![.?!]\s)(?<!^)\b[A-Z][a-z]+", p)
    return [
        math.log1p(len(nums)),
        math.log1p(len(set(nums))),
        math.log1p(sum(w in NUMBER_WORDS for w in words)),
        math.log1p(low.count("%") + low.count("percent")),
        math.log1p(
            len(re.findall(r"\d+/\d+", p)) + sum(w in ("half", "third", "quarter") for w in words)
        ),
        math.log1p(len(re.findall(r"\d\.\d", p))),
        math.log1p(p.count("$")),
        math.log1p(
            sum(
                w in ("minutes", "minute", "hours", "hour", "seconds", "days", "day") for w in words
            )
        ),
        math.log1p(len(re.findall(r"\bper\b|\beach\b|\bevery\b|an hour|a day|a week", low))),
        math.log1p(sum(w in ("twice", "times", "double", "triple") for w in words)),
        math.log1p(len(re.findall(r"more than|less than|fewer than", low))),
        math.log1p(sum(w in ("remaining", "left", "rest") for w in words)),
        math.log1p(sum(w in UNITS for w in words)),
        math.log1p(len(set(names))),
        math.log1p(words.count("if")),
        math.log1p(len(sents)),
        math.log1p(len(words)),
        math.log1p(sum(v >= 1000 for v in values)),
        math.log1p(len(question.split())),
        math.log1p(sum(ch.isdigit() for ch in p)),
        math.log1p(len({w for w in words if w in UNITS})),
    ]


def fit_logistic(x, y, l2, weight=None):
    """bench.fit_np with optional sample weights; returns (bias, w, mean, scale)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    wt = np.ones(len(x)) if weight is None else weight
    w = np.zeros(z.shape[1])
    pen = np.full(z.shape[1], float(l2))
    pen[0] = 0.0
    for _ in range(30):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ (wt * (p - y)) + pen * w
        hess = (z * (wt * p * (1 - p))[:, None]).T @ z + np.diag(pen)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w, mean, scale


def predict_logistic(model, x):
    w, mean, scale = model
    return 1 / (1 + np.exp(-np.clip(w[0] + ((x - mean) / scale) @ w[1:], -30, 30)))


def labels(rows):
    y = np.array([r["y"] for r in rows], dtype=float)
    weak = np.array([r["weak_correct"] for r in rows], dtype=float)
    strong = np.array([r["strong_correct"] for r in rows], dtype=float)
    return y, weak, strong


def fold_array(rows, seed):
    return np.asarray(bench.folds(rows, seed))


def saving(weak, strong, scores):
    """bench.saving_at_quality, vectorised (same tie order: a stable sort of -score)."""
    n = len(weak)
    target = bench.QUALITY * strong.sum() / n
    order = np.argsort(-np.asarray(scores), kind="stable")
    correct = weak.sum() + np.concatenate([[0.0], np.cumsum((strong - weak)[order])])
    k = (
        int(np.argmax(correct / n >= target - 1e-12))
        if (correct / n >= target - 1e-12).any()
        else n
    )
    share = k / n
    return 1 - (share + (1 - share) * bench.WEAK_PRICE)


def gain_auc(weak, strong, scores):
    """Concordance of the score with strong - weak (+1 / 0 / -1) over pairs of prompts that
    differ in it, ties half: how well the score orders prompts by what the strong model adds
    (a smoother read of the same ranking than the saving at one quality)."""
    g = strong - weak
    num = den = 0.0
    for hi, lo in ((1, 0), (1, -1), (0, -1)):
        a, b = np.sort(scores[g == hi]), np.sort(scores[g == lo])
        if len(a) and len(b):
            below = np.searchsorted(b, a, "left")
            ties = np.searchsorted(b, a, "right") - below
            num += below.sum() + 0.5 * ties.sum()
            den += len(a) * len(b)
    return num / den


def paired_bootstrap_auc(weak, strong, runs_a, runs_b, n_boot=2000, seed=0):
    rng = np.random.default_rng(seed)
    n = len(weak)
    d = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        d.append(
            np.mean([gain_auc(weak[idx], strong[idx], s[idx]) for s in runs_a])
            - np.mean([gain_auc(weak[idx], strong[idx], s[idx]) for s in runs_b])
        )
    d = np.asarray(d)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def summary(values):
    v = np.asarray(values)
    return f"{v.mean():.1%} ± {v.std():.1%} ({v.min():.1%}–{v.max():.1%})"


def paired_bootstrap(weak, strong, runs_a, runs_b, n_boot=2000, seed=0):
    """95 % interval of mean-over-seeds saving(a) - saving(b), resampling the prompts."""
    rng = np.random.default_rng(seed)
    n = len(weak)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        a = np.mean([saving(weak[idx], strong[idx], s[idx]) for s in runs_a])
        b = np.mean([saving(weak[idx], strong[idx], s[idx]) for s in runs_b])
        diffs.append(a - b)
    d = np.asarray(diffs)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)), float((d > 0).mean())


def save_scores(name, runs):
    out = WORK / "scores"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{name}.npy", np.asarray(runs))


def load_scores(name):
    return np.load(WORK / "scores" / f"{name}.npy")


def report(name, rows, runs):
    """Print a variant's GSM8K and MMLU savings over the seeds; keep its scores."""
    save_scores(name, runs)
    _, weak, strong = labels(rows)
    out = {}
    for fam in ("gsm8k", "mmlu"):
        idx = np.array([i for i, r in enumerate(rows) if r["family"] == fam])
        vals = [saving(weak[idx], strong[idx], s[idx]) for s in runs]
        out[fam] = vals
        print(f"{name:40s} {fam:6s} {summary(vals)}", flush=True)
    return out


if __name__ == "__main__":
    build_cache()
    print(json.dumps({k: v.shape for k, v in data()[1].items()}, default=str))


def versus(weak, strong, g, m, runs, base):
    """``runs`` (fold seeds x prompts) against ``base``: GSM8K savings per seed, MMLU's mean,
    seeds won, the paired bootstrap of the GSM8K difference (lo, hi, P(>0)), and the gain
    concordance with its bootstrap interval (auc, auc of base, lo, hi)."""
    vg = [saving(weak[g], strong[g], s[g]) for s in runs]
    vm = float(np.mean([saving(weak[m], strong[m], s[m]) for s in runs]))
    base_g = [saving(weak[g], strong[g], s[g]) for s in base]
    won = sum(a > b for a, b in zip(vg, base_g, strict=True))
    lo, hi, p = paired_bootstrap(weak[g], strong[g], runs[:, g], base[:, g])
    auc = np.mean([gain_auc(weak[g], strong[g], s[g]) for s in runs])
    auc0 = np.mean([gain_auc(weak[g], strong[g], s[g]) for s in base])
    alo, ahi = paired_bootstrap_auc(weak[g], strong[g], runs[:, g], base[:, g])
    return vg, vm, float(np.mean(vg) - np.mean(base_g)), won, (lo, hi, p), (auc, auc0, alo, ahi)
