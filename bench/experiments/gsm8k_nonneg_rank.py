"""Two more variants of the committed head (`nonneg-steps`), fixed before any of them ran
(helper h152, 2026-12-04, research, not the product). The fit and its active-set Newton are
gsm8k_group_l2.py's; the run, compare and decide machinery is gsm8k_nonneg_more.py's (both
imported, not copied; gsm8k_group_l2.fit got a ``rank_w`` keyword, default 1, for the first):

  nonneg-steps        the committed head re-measured (gsm8k_group_l2.nonneg_steps exactly:
                      steps weights >= 0 with their L2 30, every other weight's L2 3,000,
                      the GSM8K ranking term at weight 1). The baseline.
  nonneg-rank3        nonneg-steps with the GSM8K ranking term at weight 3 instead of 1
                      (everything else the same).
  nonneg-steps-l2-10  nonneg-steps with the steps weights' L2 at 10 instead of 30
                      (everything else the same).

Pre-registered decision rule (the one of gsm8k_nonneg_more.py, fixed with this docstring,
before any run): a variant is "worth adopting" only if (1) its mean GSM8K saving at 95 % of
the strong model's quality is at least +1.0 point above `nonneg-steps` (re-measured here) on
BOTH fold seed sets 0-9 and 30-39, (2) its MMLU unseen-subject mean is at most 1.0 point
below `nonneg-steps`' (on each set), and (3) its GSM8K calibration error at fold seed 0 is
<= 0.06. Reported either way; no variant is added after results are seen.

  export ROUTING_DEV=/work/shared/data/routing/dev.jsonl GSM8K_EXP_DIR=/tmp/x \\
         OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  mkdir -p $GSM8K_EXP_DIR/gsm8k_experiments
  ../../.venv/bin/python gsm8k_common.py
  ../../.venv/bin/python gsm8k_nonneg_rank.py nonneg-steps nonneg-rank3 nonneg-steps-l2-10
  FOLD_SEEDS=30-39 ../../.venv/bin/python gsm8k_nonneg_rank.py nonneg-steps nonneg-rank3 nonneg-steps-l2-10
  ../../.venv/bin/python gsm8k_nonneg_rank.py compare; FOLD_SEEDS=30-39 ... compare
  ../../.venv/bin/python gsm8k_nonneg_rank.py decide   # the rule above over both sets
"""

from __future__ import annotations

import sys

import gsm8k_group_l2 as g2
import gsm8k_nonneg_more as nm
import numpy as np
from gsm8k_common import fold_array

rows, N = g2.rows, g2.N


def _nonneg(steps_l2, rank_w):
    def head(seed):
        fold = fold_array(rows, seed)
        s = np.zeros(N)
        for k in range(5):
            tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
            model = g2.fit(tr, g2.pens(steps_l2), nonneg=g2.NONNEG, rank_w=rank_w)
            s[te] = g2.logit(model, te)
        return s

    return head


GROUPS = {
    "nonneg-steps": g2.nonneg_steps,
    "nonneg-rank3": _nonneg(30.0, 3.0),
    "nonneg-steps-l2-10": _nonneg(10.0, 1.0),
}

# gsm8k_nonneg_more's run / compare / decide read these module globals.
nm.PREFIX = "r1204k "
nm.GROUPS = GROUPS

if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["compare"]:
        nm.compare()
    elif args == ["decide"]:
        nm.decide()
    else:
        for a in args:
            nm.run(a)
