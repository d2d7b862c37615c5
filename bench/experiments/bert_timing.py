"""Per-request cost of the full all-MiniLM-L6-v2 transformer (and paraphrase-MiniLM-L3-v2) for
one 1,000-token prompt, truncated to its first N word pieces: tokenise the whole prompt,
keep the first N - 2 pieces, run the encoder, mean-pool. Each engine in a fresh process
(its memory measured alone): numpy float32 (bert_forward.Bert), onnxruntime float32 (the
same graph, bert_forward.onnx_graph), onnxruntime int8 (that graph dynamically quantised:
int8 weights, int8 activations per tensor). RSS: the process's resident set after
loading and the runs, minus its resident set with numpy, tokenizers and onnxruntime
imported (what a gateway worker would add). The ONNX files are written by the parent
process first, so the measured process holds only the tokenizer and the runtime's session;
the static engine loads its table as the product does (core.smart_learned.encoder).

  OMP_NUM_THREADS=1 /tmp/exp/bin/python bert_timing.py            # every engine, 1 thread
  /tmp/exp/bin/python bert_timing.py --threads 2
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("GSM8K_EXP_DIR", tempfile.gettempdir())) / "gsm8k_experiments"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prompt_of(tok, n_tokens=1000) -> str:
    text = (HERE.parents[1] / "docs" / "smart-routing.md").read_text()
    enc = tok.encode(text, add_special_tokens=False)
    return text[: enc.offsets[n_tokens - 1][1]]


def one(engine: str, tokens: int, threads: int, model: str) -> dict:
    import numpy as np
    import onnxruntime as ort  # noqa: F401  (imported in the baseline too)

    sys.path.insert(0, str(HERE))
    import gc
    import zipfile

    import bert_forward as bf
    from tokenizers import Tokenizer

    base = rss_mb()
    with zipfile.ZipFile(bf.minilm_zip()) as zf:
        tok = Tokenizer.from_str(zf.read("tokenizer.json").decode())
    tok.no_padding()
    tok.no_truncation()
    text = prompt_of(tok)
    assert len(tok.encode(text, add_special_tokens=False).ids) >= 990
    if engine == "static":
        sys.path.insert(0, str(HERE.parents[1]))
        from core import smart_learned

        smart_learned._model_zip = bf.minilm_zip  # the wheel may sit in the repo's .venv only
        tok, table = smart_learned.encoder()

        def run():
            ids = tok.encode(text, add_special_tokens=False).ids
            v = table[ids].mean(axis=0)
            return v / np.linalg.norm(v)

    elif engine == "numpy":
        _, w = bf.minilm_l6()
        if model == "l3":
            w = bf.weights_from_onnx(os.environ["VITAL_ONNX"], "model.0.auto_model.")
        bert = bf.Bert({k: np.array(v) for k, v in w.items()})  # copies: the zip's bytes go
        del w
        gc.collect()

        def run():
            return bert.embed_ids([bf.token_ids(tok, text, tokens)])

    else:
        import onnxruntime as ort

        path = WORK / f"timing_{model}_{engine[4:]}.onnx"
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        def run():
            a = np.array([bf.token_ids(tok, text, tokens)])
            return sess.run(None, {"input_ids": a, "attention_mask": np.ones_like(a)})[0]

    gc.collect()
    for _ in range(5):
        run()
    ts = []
    for _ in range(100):
        t = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return {
        "model": model,
        "engine": engine,
        "tokens": tokens,
        "threads": threads,
        "p50_ms": round(1000 * ts[50], 1),
        "p90_ms": round(1000 * ts[90], 1),
        "rss_added_mb": round(rss_mb() - base, 1),
        "rss_mb": round(rss_mb(), 1),
    }


def write_onnx():
    """timing_{l6,l3}_{fp32,int8}.onnx in WORK (once)."""
    sys.path.insert(0, str(HERE))
    import bert_forward as bf
    from onnxruntime.quantization import QuantType, quantize_dynamic

    WORK.mkdir(parents=True, exist_ok=True)
    for model in ("l6", "l3") if os.environ.get("VITAL_ONNX") else ("l6",):
        fp32, int8 = WORK / f"timing_{model}_fp32.onnx", WORK / f"timing_{model}_int8.onnx"
        if int8.exists():
            continue
        if model == "l6":
            w = bf.minilm_l6()[1]
        else:
            w = bf.weights_from_onnx(os.environ["VITAL_ONNX"], "model.0.auto_model.")
        bf.onnx_graph(bf.Bert(w), fp32)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)


def main(argv):
    if argv and argv[0] == "--one":
        print(json.dumps(one(argv[1], int(argv[2]), int(argv[3]), argv[4])), flush=True)
        return
    write_onnx()
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 1
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    configs = [("static", 1000, "l6")]
    for n in (64, 128, 256):
        configs += [("numpy", n, "l6"), ("ort-fp32", n, "l6"), ("ort-int8", n, "l6")]
    if os.environ.get("VITAL_ONNX"):
        configs += [("ort-fp32", n, "l3") for n in (128, 256)]
        configs += [("ort-int8", n, "l3") for n in (128, 256)]
    if "--quick" in argv:  # what the README's table needs
        configs = [c for c in configs if c[1] != 256 or c[0] == "ort-int8"]
    for engine, n, model in configs:
        out = subprocess.run(
            [sys.executable, __file__, "--one", engine, str(n), str(threads), model],
            env=env,
            capture_output=True,
            text=True,
        )
        print(out.stdout.strip() or out.stderr[-2000:], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
