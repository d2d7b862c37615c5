"""The learned classifier reads a long prompt's ends a piece at a time (its tokenizer holds
the GIL): the tokens it keeps, and so the embedding, are exactly those of tokenizing the
whole text (or its first and last MAX_CHARS // 2 characters) and keeping its ends, for any
script, and it reads a few thousand characters of a prompt in Chinese or punctuation where
it read 16,000 from each end (50-70 ms of a worker's event loop)."""

import random

import orjson
import pytest

from core import smart_learned
from gateway.tests.test_smart_routing import DEV_SET

pytestmark = pytest.mark.skipif(
    smart_learned.missing() is not None,
    reason="the smart extra (requirements-smart.txt) is not installed",
)

HALF = smart_learned.MAX_CHARS // 2
NEED = smart_learned.MAX_TOKENS // 2


def whole_text_ids(tokenizer, text: str) -> list[int]:
    """The ids as embed() chose them until 2026-12-04: each end tokenized whole."""
    if len(text) > smart_learned.MAX_CHARS:
        head = tokenizer.encode(text[:HALF], add_special_tokens=False).ids[:NEED]
        tail = tokenizer.encode(text[-HALF:], add_special_tokens=False).ids[-NEED:]
        ids = head + tail
    else:
        ids = tokenizer.encode(text or " ", add_special_tokens=False).ids
    known = [i for i in ids if i != smart_learned.UNKNOWN_ID]
    ids = known or ids
    if len(ids) > smart_learned.MAX_TOKENS:
        ids = ids[:NEED] + ids[-NEED:]
    return ids


class CountingTokenizer:
    """The packaged tokenizer, counting the characters it is given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.chars = tokenizer, 0

    def encode(self, text, **kwargs):
        self.chars += len(text)
        return self.tokenizer.encode(text, **kwargs)


def tokenizer():
    return smart_learned.encoder()[0]


def assert_same_as_whole_text(text: str):
    import numpy as np

    tok, table = smart_learned.encoder()
    expected = whole_text_ids(tok, text)
    assert smart_learned.token_ids(tok, text) == expected
    if expected:
        v = table[expected].mean(axis=0)
        v = v / float(np.linalg.norm(v))
    else:
        v = np.zeros(table.shape[1], dtype=np.float32)
    assert np.array_equal(smart_learned.embed(text), v)


def _random(lo: int, hi: int, n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(chr(rng.randint(lo, hi)) for _ in range(n))


ENGLISH = "The quick brown fox jumps over the lazy dog, then computes 17 * 23 = 391. "
LONG = smart_learned.MAX_CHARS + 8_000  # cut: embedded from its two ends
SHORT = smart_learned.MAX_CHARS  # not cut: every token, then the first and last known ones

TEXTS = {
    "ideographic full stops, cut": "。" * LONG,
    "ideographic full stops, not cut": "。" * SHORT,
    "ASCII full stops, cut": "." * LONG,
    "one common character, not cut": "的" * SHORT,
    "Chinese, cut": _random(0x4E00, 0x9FA5, LONG),
    "Chinese, not cut (mostly unknown characters)": _random(0x4E00, 0x9FA5, SHORT),
    "Hangul syllables, no spaces, cut": _random(0xAC00, 0xD7A3, LONG),
    "Hangul words, cut": " ".join(_random(0xAC00, 0xD7A3, 3, s) for s in range(LONG // 4)),
    "one Hangul syllable, cut": "가" * LONG,
    "English, cut": (ENGLISH * 1000)[:LONG],
    "English, cut mid-word at both ends": "x" + (ENGLISH * 1000)[: LONG - 7] + "abcdefghijkl",
    "English, not cut, more than 4,096 tokens": (ENGLISH * 1000)[:SHORT],
    "Chinese and English words": ("中文的句子 with English words 和数字 12345。" * 2000)[:LONG],
    "emoji between words, cut": ("word 😀🎉 more😀text " * 3000)[:LONG],
    "emoji between spaces, not cut (all unknown)": "😀 " * (SHORT // 2),
    "one long word then full stops, cut": "a" * 5_000 + "。" * (LONG - 5_000),
    "full stops then one long word, cut": "。" * (LONG - 5_000) + "a" * 5_000,
    "joined by zero-width spaces (not word breaks)": "ab\u200b" * (LONG // 3),
    "accents and combining marks": ("e\u0301te\u0301 café naïve \u0301x " * 2000)[:LONG],
    "Cyrillic words": " ".join(_random(0x430, 0x44F, 7, s) for s in range(LONG // 8)),
    "kana, no spaces (one word)": _random(0x3041, 0x3096, LONG),
    "Greek capitals and sigma": ("ΣΑΣ σας Σ. " * 4000)[:LONG],
    "empty": "",
    "a few words": "hi there",
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_it_keeps_exactly_the_tokens_of_the_whole_text(text):
    assert_same_as_whole_text(text)


_ALPHABETS = [
    "中文字词语的",
    "한국어문장",
    "。，、！",
    "abc defg hij",
    "éèüö",
    "😀🎉",
    " \n\t",
    ".,;-",
    "\u0301\u200b\x00\x1c",
    "ΣΑΣσας",
    "привет мир",
    "0123456789",
    "ｱｲｳ",
    "\U00020000\U00020001",
]


@pytest.mark.parametrize("seed", range(40))
def test_it_keeps_exactly_the_tokens_of_the_whole_text_for_mixed_scripts(seed):
    """Runs of every script, punctuation and unknown symbol, so that the pieces' cuts fall
    inside words, runs of whitespace and combining marks."""
    rng = random.Random(seed)
    for length in (rng.randint(5_000, SHORT), rng.randint(SHORT + 1, SHORT + 20_000)):
        parts, total = [], 0
        while total < length:
            alphabet = rng.choice(_ALPHABETS)
            run = rng.randint(1, rng.choice([3, 30, 300, 3000]))
            parts.append("".join(rng.choice(alphabet) for _ in range(run)))
            total += run
        assert_same_as_whole_text("".join(parts)[:length])


@pytest.mark.skipif(not DEV_SET.is_file(), reason="the development set is not beside the repo")
def test_no_development_set_prompt_changes():
    rows = [orjson.loads(line) for line in DEV_SET.read_bytes().splitlines() if line.strip()]
    tok = tokenizer()
    assert max(len(r["prompt"]) for r in rows) < smart_learned.MAX_CHARS
    for r in rows:
        assert smart_learned.token_ids(tok, r["prompt"]) == whole_text_ids(tok, r["prompt"])


@pytest.mark.parametrize(
    "text",
    ["。" * LONG, "。" * SHORT, "." * LONG, _random(0x4E00, 0x9FA5, LONG), "的" * SHORT],
    ids=["full stops, cut", "full stops, not cut", "ASCII full stops", "Chinese", "one character"],
)
def test_it_reads_a_few_thousand_characters_of_a_prompt_of_one_token_each(text):
    """Where it tokenized 16,000 characters from each end (or all 32,000) to keep 2,048
    tokens from each."""
    counting = CountingTokenizer(tokenizer())
    smart_learned.token_ids(counting, text)
    assert counting.chars <= 2 * (NEED + NEED // 4)


def test_it_reads_an_english_prompt_s_ends_not_all_of_them():
    counting = CountingTokenizer(tokenizer())
    smart_learned.token_ids(counting, (ENGLISH * 1000)[:LONG])
    assert counting.chars < 2 * HALF * 0.8
