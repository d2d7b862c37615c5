"""Two more tries at GSM8K (docs/smart-routing.md, "Tried later on 2026-12-03"), both with
the committed recipe (logistic head, L2 3,000, the pairwise term on GSM8K at weight 1):

- `wordllama`: WordLlama's 256-dimension token vectors (the `l2_supercat` codebook that
  the `wordllama` wheel on PyPI carries, taken from Llama 2's embedding layer), mean-pooled,
  in place of MiniLM's, and beside them. Needs the wheel unpacked:
  `pip download wordllama --no-deps -d /tmp/wl && unzip -q /tmp/wl/*.whl -d /tmp/wl/x`
  and WORDLLAMA_DIR=/tmp/wl/x/wordllama.
- `mmlu-pairs`: the pairwise term on MMLU's pairs too (each family's pairs weighted as much
  as that family's own log loss), in case ordering MMLU questions by what the strong model
  adds teaches an order that carries over to maths problems.

Needs scipy, safetensors and tokenizers (the experiments' venv)."""

import os
import sys
from pathlib import Path

import gsm8k_pairwise as gp
import numpy as np
from gsm8k_common import SEEDS, WORK, fit_logistic, fold_array, report
from scipy.optimize import minimize

rows, c, y, gain = gp.rows, gp.c, gp.y, gp.gain
fam = np.array([r["family"] for r in rows])


def wordllama_embedding():
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    cache = WORK / "wordllama.npy"
    if cache.exists():
        return np.load(cache)
    base = Path(os.environ["WORDLLAMA_DIR"])
    table = load_file(base / "weights/l2_supercat_256.safetensors")["embedding.weight"]
    table = table.astype(np.float32)
    tok = Tokenizer.from_str((base / "tokenizers/l2_supercat_tokenizer_config.json").read_text())
    out = []
    for r in rows:
        ids = np.clip(
            tok.encode(r["prompt"] or " ", add_special_tokens=False).ids, 0, len(table) - 1
        )
        v = table[ids].mean(axis=0)
        out.append(v / (np.linalg.norm(v) or 1.0))
    e = np.asarray(out, dtype=np.float64)
    np.save(cache, e)
    return e


def out_of_fold(fit, predict):
    runs = []
    for seed in SEEDS:
        fold = fold_array(rows, seed)
        s = np.zeros(len(rows))
        for k in range(5):
            tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
            s[te] = predict(fit(tr), te)
        runs.append(s)
    return np.asarray(runs)


def fit_both_families(idx):
    """The committed objective with the pairwise term over GSM8K's and MMLU's pairs."""
    x = gp.x
    w0, mean, scale = fit_logistic(x[idx], y[idx], gp.L2)
    z = np.hstack([np.ones((len(idx), 1)), (x[idx] - mean) / scale])
    yy = y[idx]
    a_all, b_all, weight = [], [], []
    for f in ("gsm8k", "mmlu"):
        gi = np.where(fam[idx] == f)[0]
        gg = gain[idx][gi]
        a, b = np.where(gg[:, None] > gg[None, :])
        a_all.append(gi[a])
        b_all.append(gi[b])
        weight.append(np.full(len(a), len(gi) / len(a)))
    a, b, sp = np.concatenate(a_all), np.concatenate(b_all), np.concatenate(weight)
    pen = np.full(z.shape[1], gp.L2)
    pen[0] = 0

    def f(w):
        t = z @ w
        p = 1 / (1 + np.exp(-np.clip(t, -30, 30)))
        d = t[a] - t[b]
        loss = (np.logaddexp(0, t) - yy * t).sum() + 0.5 * (pen * w * w).sum()
        loss += (sp * np.logaddexp(0, -d)).sum()
        gpair = -sp / (1 + np.exp(np.clip(d, -30, 30)))
        coef = p - yy + np.bincount(a, gpair, len(idx)) - np.bincount(b, gpair, len(idx))
        return loss, z.T @ coef + pen * w

    return minimize(f, w0, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x, mean, scale


def main(which):
    if "wordllama" in which:
        wl = wordllama_embedding()
        for name, x in (
            ("wordllama + rules", np.hstack([wl, c["rules"]])),
            ("MiniLM + wordllama + rules", np.hstack([c["emb"], wl, c["rules"]])),
        ):
            gp.x = x
            report(name, rows, out_of_fold(lambda tr: gp.fit_pairwise(tr, 1.0), gp.predict))
    if "mmlu-pairs" in which:
        gp.x = np.hstack([c["emb"], c["rules"]])
        report("pairwise on GSM8K and MMLU pairs", rows, out_of_fold(fit_both_families, gp.predict))


if __name__ == "__main__":
    main(sys.argv[1:] or ["wordllama", "mmlu-pairs"])
