"""One variant of the shipped head (`nonneg-steps`), fixed before it ran (helper h155,
2026-12-04, research, not the product). The fit and its active-set Newton are
gsm8k_group_l2.py's; the run and compare machinery is gsm8k_nonneg_more.py's (both imported,
not copied; gsm8k_group_l2.fit got a ``hold`` keyword, default None, which leaves every
earlier fit unchanged).

Hypothesis: `nonneg-rank3` (the GSM8K ranking term at weight 3) gains on GSM8K but orders
chat worse because the heavier term moves the embedding weights. So:

  nonneg-steps       the shipped head re-measured (gsm8k_group_l2.nonneg_steps' fit: steps
                     weights >= 0 with their L2 30, every other weight's L2 3,000, the
                     GSM8K ranking term at weight 1). The baseline.
  rank3-steps-only   in each fold, first the nonneg-steps fit; then, with the embedding
                     weights and the rules-feature weights held at those values, only the
                     bias and the 14 steps weights refitted (still >= 0, their L2 30) under
                     the objective with the ranking term at weight 3.

Pre-registered rules (fixed with this docstring, before any run):

  Dev rule: mean GSM8K gain over nonneg-steps >= +1.0 on fold seeds 0-9 AND on 30-39, MMLU
  at least 55 %, GSM8K calibration error at seed 0 <= 0.06.
  (MMLU: the unseen-subject mean saving on each of the two seed sets.)

  Chat rule (only if the dev rule holds): build the full-data head file (the product's
  format, core/smart_learned.json's fields; chat_raise 0.20 kept, quantiles recomputed for
  the new weights as bench/smart_routing.py --train does) at /tmp/h155-head.json, and with
  chat_raise_select.py's `fixtures` mode and that head path (CHAT_BLIND=
  chat_blind2_2026-12-04.jsonl, then chat_blind_2026-12-04.jsonl, then
  chat_blind3_2026-12-04.jsonl) compare hard/easy sent up against the shipped head
  (core/smart_learned.json): every fixture set and those three blind sets within +-2 of the
  shipped head's counts (hard at least shipped-2, easy at most shipped+2).
  chat_blind4_2026-12-04.jsonl is neither read nor scored (it stays blind).

  export ROUTING_DEV=/work/shared/data/routing/dev.jsonl GSM8K_EXP_DIR=/tmp/x \\
         OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  mkdir -p $GSM8K_EXP_DIR/gsm8k_experiments
  ../../.venv/bin/python gsm8k_common.py
  ../../.venv/bin/python gsm8k_steps_rank3.py nonneg-steps rank3-steps-only
  FOLD_SEEDS=30-39 ../../.venv/bin/python gsm8k_steps_rank3.py nonneg-steps rank3-steps-only
  ../../.venv/bin/python gsm8k_steps_rank3.py compare; FOLD_SEEDS=30-39 ... compare
  ../../.venv/bin/python gsm8k_steps_rank3.py decide          # the dev rule
  ../../.venv/bin/python gsm8k_steps_rank3.py head /tmp/h155-head.json  # if it holds
  CHAT_BLIND=chat_blind2_2026-12-04.jsonl ../../.venv/bin/python chat_raise_select.py \\
      fixtures 0.2 /tmp/h155-head.json    # and the same with ../../core/smart_learned.json
"""

from __future__ import annotations

import json
import sys

import gsm8k_group_l2 as g2
import gsm8k_nonneg_more as nm
import numpy as np
from gsm8k_common import fold_array

rows, N = g2.rows, g2.N
HELD = np.arange(1, g2.D - 14 + 1)  # w-indices of the embedding and rules weights
STAGE1: dict = {}  # (seed, fold) -> the nonneg-steps model, shared by the two heads


def _stage1(seed, k, tr):
    if (seed, k) not in STAGE1:
        STAGE1[(seed, k)] = g2.fit(tr, g2.pens(30.0), nonneg=g2.NONNEG)
    return STAGE1[(seed, k)]


def steps_refit(tr, model, rank_w=3.0):
    """The bias and the steps weights refitted on ``tr`` (>= 0, L2 30) at ranking weight
    ``rank_w``, the other weights held at ``model``'s."""
    w1 = model[0]
    return g2.fit(tr, g2.pens(30.0), w0=w1, nonneg=g2.NONNEG, rank_w=rank_w, hold=(w1, HELD))


def nonneg_steps(seed):
    """gsm8k_group_l2.nonneg_steps' fit exactly, its models kept for rank3-steps-only."""
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        s[te] = g2.logit(_stage1(seed, k, tr), te)
    return s


def rank3_steps_only(seed):
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        model = steps_refit(tr, _stage1(seed, k, tr))
        assert np.array_equal(model[0][HELD], _stage1(seed, k, tr)[0][HELD])
        s[te] = g2.logit(model, te)
    return s


GROUPS = {"nonneg-steps": nonneg_steps, "rank3-steps-only": rank3_steps_only}

nm.PREFIX = "r1204s "
nm.GROUPS = GROUPS


def decide():
    """The dev rule above over fold seeds 0-9 and 30-39."""
    a, b = nm.measures(""), nm.measures(" [seeds 30-39]")
    name = "rank3-steps-only"
    checks = {
        "GSM8K +1.0 on 0-9": a[name]["diff"] >= 0.01,
        "GSM8K +1.0 on 30-39": b[name]["diff"] >= 0.01,
        "MMLU >= 55 % on 0-9": a[name]["vm"] >= 0.55,
        "MMLU >= 55 % on 30-39": b[name]["vm"] >= 0.55,
        "GSM8K calibration seed 0 <= 0.06": a[name]["cal"][0] <= 0.06,
    }
    verdict = "dev rule HOLDS" if all(checks.values()) else "dev rule FAILS"
    print(f"{name}: {verdict}; " + ", ".join(f"{k}: {v}" for k, v in checks.items()))


def head(out):
    """The full-data head file: the product's training (bench.fit_head, the shipped head),
    then the steps-only refit at ranking weight 3 on the product's feature matrix; the
    quantiles recomputed as bench/smart_routing.py --train does; every other field the
    shipped head's (chat_raise 0.20 kept)."""
    bench = g2.bench
    from gateway.dataplane import smart

    shipped = json.loads((bench.ROOT / "core" / "smart_learned.json").read_text())
    feats = [smart.features(bench.body_of(r["prompt"])) for r in rows]
    x = bench.learned_matrix(rows, feats)
    h1 = bench.fit_head(rows, x, bench.LEARNED_L2)
    print(
        "stage 1 vs the shipped head: max |dw| "
        f"{np.abs(np.asarray(h1['weights']) - shipped['weights']).max():.2e}, "
        f"|d bias| {abs(h1['bias'] - shipped['bias']):.2e}"
    )
    g2.X = x  # the product's matrix (same rows, same order) for gsm8k_group_l2.fit
    w1 = np.concatenate([[h1["bias"]], h1["weights"]])
    allrows = np.arange(N)
    w, mean, scale = g2.fit(
        allrows, g2.pens(30.0), w0=w1, nonneg=g2.NONNEG, rank_w=3.0, hold=(w1, HELD)
    )
    assert np.allclose(mean, h1["mean"]) and np.allclose(scale, h1["scale"])
    new = dict(shipped)
    new["bias"] = float(w[0])
    new["weights"] = w[1:].tolist()
    new["mean"], new["scale"] = h1["mean"], h1["scale"]
    new["quantiles"] = bench.quantile_table(bench.learned_scores(x, new))
    new["ranking_weight"] = 3.0
    new["note"] = "rank3-steps-only: bias and steps weights refitted at ranking weight 3"
    print(
        f"bias {h1['bias']:.4f} -> {new['bias']:.4f}; steps weights "
        f"{np.round(h1['weights'][-14:], 3).tolist()} -> {np.round(w[-14:], 3).tolist()}"
    )
    open(out, "w").write(json.dumps(new) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["compare"]:
        nm.compare()
    elif args == ["decide"]:
        decide()
    elif args[:1] == ["head"]:
        head(args[1])
    else:
        for a in args:
            nm.run(a)
