"""The pairwise variant at its fixed weight (1) and the committed head on fold seeds
10-19, which no choice above saw: does the seed-to-seed edge hold on new fold draws?"""

import numpy as np
from gsm8k_common import fit_logistic, fold_array, saving, summary
from gsm8k_pairwise import L2, fit_pairwise, gain, gsm, predict, rows, strong, weak, x, y

g = np.where(gsm)[0]
m = np.where(~gsm)[0]
res = {"committed": [], "pairwise": []}
mm = {"committed": [], "pairwise": []}
for seed in range(10, 20):
    fold = fold_array(rows, seed)
    s0, s1 = np.zeros(len(rows)), np.zeros(len(rows))
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        base = fit_logistic(x[tr], y[tr], L2)
        s0[te] = predict(base, te)
        s1[te] = predict(fit_pairwise(tr, 1.0, base), te)
    for name, s in (("committed", s0), ("pairwise", s1)):
        res[name].append(saving(weak[g], strong[g], s[g]))
        mm[name].append(saving(weak[m], strong[m], s[m]))
    print(seed, {k: round(v[-1], 4) for k, v in res.items()}, flush=True)
for name in res:
    print(f"seeds 10-19 {name}: GSM8K {summary(res[name])}, MMLU {np.mean(mm[name]):.1%}")
won = sum(a > b for a, b in zip(res["pairwise"], res["committed"], strict=True))
print(f"pairwise won {won}/10")
_ = gain
