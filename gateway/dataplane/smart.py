"""Smart routing on the request path: a prompt's difficulty score and the tier it goes to."""

import hashlib
import heapq
import logging
import math
import re
import time
from collections import Counter
from functools import cache, lru_cache

from core import smart_steps
from core.smart import WORD_BYTES, SmartPolicy, keyword_key, rules_model

log = logging.getLogger("bonito.gateway.smart")

# Keyword lists of the rules classifier, per category; a policy may replace any list
# (SmartPolicy.keywords). A keyword is a word or a phrase, matched case-insensitively (ASCII
# letters) as whole words: punctuation counts as a space.
DEFAULT_KEYWORDS = {
    "math": (
        "calculate",
        "how many",
        "how much",
        "total",
        "percent",
        "solve",
        "equation",
        "average",
        "ratio",
        "probability",
        "integer",
        "remainder",
        "sum of",
        "each",
        "cost",
        "costs",
    ),
    "reasoning": (
        "why",
        "explain",
        "prove",
        "derive",
        "analyze",
        "analyse",
        "analysis",
        "compare",
        "evaluate",
        "justify",
        "implies",
        "therefore",
        "step by step",
        "reason",
        "reasoning",
        "which of the following",
        "except",
        "not true",
        "most likely",
    ),
    "multistep": (
        "then",
        "after",
        "remaining",
        "first",
        "second",
        "finally",
        "twice",
        "half",
        "per",
        "every",
        "left",
        "more than",
        "less than",
        "times",
    ),
    "code": (
        "def",
        "function",
        "class",
        "return",
        "import",
        "algorithm",
        "complexity",
        "select",
        "regex",
        "compile",
        "bug",
    ),
    "simple": (
        "translate",
        "summarize",
        "summarise",
        "list",
        "define",
        "what is",
        "who is",
        "who was",
        "capital of",
        "synonym",
        "spell",
        "rewrite",
        "format",
        "hello",
    ),
}
CATEGORIES = tuple(DEFAULT_KEYWORDS)
SCAN_CHARS = 16_000  # keywords are looked for in the first and last 8,000 characters
_DIGITS = bytes(range(48, 58))
_MATH = b"+-*/=^%$<>"
# Letters of scripts other than Latin, by their UTF-8 lead byte: Greek to N'Ko (two bytes,
# U+0380-U+07FF) and U+0800-U+1FFF and U+3000-U+DFFF (three: Indic, Thai, Georgian,
# Hangul, kana, CJK...). Curly quotes, dashes and other punctuation (U+2000-U+2FFF), accented
# Latin letters, fullwidth forms and emoji (four bytes) are not another script.
_SCRIPT2 = bytes(range(0xCE, 0xE0))
_SCRIPT3 = bytes((0xE0, 0xE1, *range(0xE3, 0xEE)))
_NOT_SCRIPT2 = bytes(b for b in range(256) if b not in _SCRIPT2)
_NOT_SCRIPT3 = bytes(b for b in range(256) if b not in _SCRIPT3)
# Mathematical operators and arrows (U+2190-U+22FF: the formal-logic and set symbols), and
# the multiplication and division signs, counted with the ASCII operators: looked for among
# the lead and continuation bytes only (every other byte deleted first, which keeps a lead
# byte next to its second byte and makes the counts a few microseconds).
_MATH_SEQUENCES = tuple(b"\xe2" + bytes((b,)) for b in range(0x86, 0x8C)) + (
    b"\xc3\x97",
    b"\xc3\xb7",
)
_NOT_MATH_BYTES = bytes(b for b in range(256) if not (b in (0xC3, 0xE2) or 0x80 <= b < 0xC0))
_NUMBERS = bytes((49 if 48 <= b <= 57 else 32) for b in range(256))  # digit runs -> "1"
# Lower-case ASCII letters; every other ASCII byte but digits becomes a space (words are
# then split in C). Bytes of other scripts stay as they are.
_WORDS = WORD_BYTES


@lru_cache(maxsize=1024)
def _compiled(words: tuple) -> tuple[tuple, tuple]:
    """(single words, (its words, phrase) pairs) of a keyword list, as the bytes they are
    matched as: a phrase is looked for only in a prompt that has each of its words."""
    singles, phrases = [], []
    for w in words:
        key = keyword_key(w)
        if key:
            (phrases if b" " in key else singles).append(key)
    return tuple(dict.fromkeys(singles)), tuple(
        (tuple(set(p.split(b" "))), b" " + p + b" ") for p in dict.fromkeys(phrases)
    )


# An app's standing instructions, the same for every prompt it sends: not scored (the
# classifiers learned from bare prompts; a system prompt made every request look harder).
INSTRUCTION_ROLES = ("system", "developer")


def prompt_text(body: dict) -> tuple[str, int]:
    """(the prompt's text, the number of turns) of a chat or completions body: the user
    messages' text (unless there are none: every message's but the system and developer
    messages', unless there is nothing else), parts of type text, one per line."""
    parts, turns = prompt_parts(body)
    return "\n".join(parts), turns


def asked_text(parts: list[str]) -> str:
    """The prompt's texts (prompt_parts) as one, each without the spaces after it: "France? "
    read as two sentences and a longer prompt, enough to cross the default slider's cut (the
    development set's prompts end in none, so their features are as they were fitted)."""
    return "\n".join(p.rstrip() for p in parts)


def line_breaks(parts: list[str]) -> int:
    """The line breaks inside the prompt's texts: not the ones that join its messages or
    parts, nor the newlines (and other spaces) around a text. A conversation's turns, an
    app's trailing newline or a message in two parts are not a prompt of many lines
    (they were: every turn after the first, or "?" then six newlines, went up a tier or
    more). Of a text longer than SCAN_CHARS, its first and last SCAN_CHARS / 2 characters
    are read, as for the other features."""
    half = SCAN_CHARS // 2
    n = 0
    for p in parts:
        if len(p) > SCAN_CHARS:
            n += p[:half].lstrip().count("\n") + p[-half:].rstrip().count("\n") + 1
        else:
            n += p.strip().count("\n")
    return n


def prompt_parts(body: dict) -> tuple[list[str], int]:
    """(the prompt's texts, the number of turns): prompt_text's, not yet joined. Of a
    conversation, the user's messages, every turn: what is asked. The assistant's replies
    and tool results are the models' own output, not the difficulty of the ask (read, a
    long answer made the easy "thanks!" after it score 0.40, a long prompt's score). The
    turns are every message but the instructions."""
    messages = body.get("messages")
    if isinstance(messages, list):
        whole = len(messages)
        messages = _ends(messages)
        said = [
            m for m in messages if not (isinstance(m, dict) and m.get("role") in INSTRUCTION_ROLES)
        ]
        turns = len(said or messages) + whole - len(messages)
        asked = [m for m in said if isinstance(m, dict) and m.get("role") == "user"]
        messages = asked or said or messages
        parts = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                for p in _ends(content):
                    if isinstance(p, dict) and isinstance(p.get("text"), str):
                        parts.append(p["text"])
        return parts, turns
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt], 1
    if isinstance(prompt, list):
        return [p for p in prompt if isinstance(p, str)], 1
    return [], 0


# Of a conversation of more messages than this (or a message of more content parts), the
# first and last half are read: the score's cost stays bounded whatever the body holds
# (300,000 empty messages took 180 ms on the event loop).
# A conversation's length past a few thousand tokens reads as the same (each feature is read
# within the development set's range), and its depth counts every message.
MAX_READ_ITEMS = 256


def _ends(items: list) -> list:
    if len(items) <= MAX_READ_ITEMS:
        return items
    half = MAX_READ_ITEMS // 2
    return items[:half] + items[-half:]


def features(body: dict, keywords: dict | None = None) -> list[float]:
    """The rules classifier's features of one request (names in FEATURE_NAMES)."""
    parts, turns = prompt_parts(body)
    text = asked_text(parts)
    if len(text) > SCAN_CHARS:
        scanned = text[: SCAN_CHARS // 2] + "\n" + text[-SCAN_CHARS // 2 :]
    else:
        scanned = text
    raw = scanned.encode("utf-8", "replace")
    n = len(raw) or 1
    digits = n - len(raw.translate(None, _DIGITS))
    maths = n - len(raw.translate(None, _MATH))
    if not raw.isascii():
        marks = raw.translate(None, _NOT_MATH_BYTES)
        maths += sum(marks.count(s) for s in _MATH_SEQUENCES)
        other_script = 2 * len(raw.translate(None, _NOT_SCRIPT2)) + 3 * len(
            raw.translate(None, _NOT_SCRIPT3)
        )
    else:
        other_script = 0
    words = raw.translate(_WORDS).split()
    seen = Counter(words)
    spaced = b" " + b" ".join(words) + b" "  # for phrases, whole words only
    kw = keywords or {}
    counts = []
    for c in CATEGORIES:
        singles, phrases = _compiled(kw.get(c) or DEFAULT_KEYWORDS[c])
        found = 0
        for w in singles:
            found += seen.get(w, 0)
        for each, p in phrases:
            if all(w in seen for w in each):
                found += spaced.count(p)
        counts.append(found)
    tools = body.get("tools")
    out_len = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    numbers = math.log1p(len(raw.translate(_NUMBERS).split()))
    choice = 1.0 if b"\nA." in raw or b"\nA)" in raw or b"\n(A)" in raw else 0.0
    sentences = math.log1p(raw.count(b". ") + raw.count(b"? "))
    tokens = math.log1p(len(text) / 4)
    # A multiple-choice question and an open problem grow hard in different ways: the
    # open-problem side of length, numbers and sentences has its own weights.
    open_problem = 1.0 - choice
    return [
        tokens,  # length in tokens, about
        digits / n,
        math.log1p(maths),
        1.0 if b"```" in raw else 0.0,
        *(math.log1p(c) for c in counts),
        min(other_script / n, 1.0),  # letters of another script than Latin (language)
        math.log1p(turns),
        math.log1p(len(tools) if isinstance(tools, list) else 0),
        math.log1p(out_len if isinstance(out_len, int) else 0),
        math.log1p(raw.count(b"?")),
        choice,
        math.log1p(line_breaks(parts)),
        sentences,
        numbers,
        open_problem * tokens,
        open_problem * numbers,
        open_problem * sentences,
        open_problem * counts[CATEGORIES.index("math")],
        open_problem * counts[CATEGORIES.index("multistep")],
    ]


FEATURE_NAMES = (
    "tokens",
    "digit_share",
    "math_symbols",
    "code_block",
    *(f"kw_{c}" for c in CATEGORIES),
    "other_script",
    "turns",
    "tools",
    "max_output",
    "questions",
    "multiple_choice",
    "lines",
    "sentences",
    "numbers",
    "open_tokens",
    "open_numbers",
    "open_sentences",
    "open_kw_math",
    "open_kw_multistep",
)
TOKENS = FEATURE_NAMES.index("tokens")

# Signals the issue names that the development set cannot teach: every one of its prompts is
# a single user message with no code block, no tools and no max_tokens, so the fitted
# weights of these features are 0 and the feature read within the set's range is a
# constant. Each adds a fixed amount to the score's log-odds (both classifiers), per unit of
# the feature above ``start`` up to ``end``: a prior, chosen by hand, not measured
# (docs/smart-routing.md, "Signals the data cannot teach"). A development-set prompt is at
# or below every ``start``: its score, and every figure measured on the set, is unchanged.
# feature -> (log-odds per unit, start, end)
PRIORS = {
    "code_block": (0.6, 0.0, 1.0),  # a ``` block: +0.6
    "turns": (0.1, math.log1p(1), math.log1p(50)),  # 3 turns +0.07, 11 +0.17, 50+ +0.32
    "tools": (0.4, 0.0, math.log1p(32)),  # 1 tool +0.28, 5 +0.72, 32+ +1.40
    "max_output": (0.2, math.log1p(1000), math.log1p(32000)),  # 4,096 +0.28, 32k+ +0.69
}
_PRIORS = tuple((FEATURE_NAMES.index(name), *prior) for name, prior in PRIORS.items())


def prior_logit(x: list[float]) -> float:
    """What PRIORS add to the log-odds of a request with features ``x``."""
    z = 0.0
    for i, per_unit, start, end in _PRIORS:
        v = x[i]
        if v > start:
            z += per_unit * ((end if v > end else v) - start)
    return z


# A chat message: a short open request holding at most one number ("Translate 'good
# morning' to Spanish", "Write a haiku about autumn"). The development set has none: its
# open prompts are maths word problems, each of two numbers or more or of 280 characters or
# more, and its other prompts are multiple choice. So the rules model reads a chat message
# as a short maths problem, by its length, and put a third of plainly easy requests above
# the default slider's cut (0.13-0.17) beside the hard ones. A prior, chosen by hand and
# not measured (docs/smart-routing.md, "Signals the data cannot teach"): CHAT_LOGIT, for a
# chat message that asks for something easy (CHAT_EASY) and holds no reasoning or code
# keyword. Applied to every short request, it sent short hard ones down too ("Implement a
# red-black tree in C with deletion", "Is P equal to NP?": half of them, on requests
# written blind); recognising what is easy keeps them where their length put them. Nothing
# in the development set is of this shape: its scores, and every figure measured on it,
# are unchanged.
CHAT_CHARS = 250
CHAT_LOGIT = -0.4
_CHAT_TOKENS = math.log1p(CHAT_CHARS / 4)  # the tokens feature of CHAT_CHARS characters


def _word_set(words: str) -> frozenset:
    return frozenset(words.split())


NUMBER_WORDS = _word_set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty "
    "sixty seventy eighty ninety hundred thousand million billion half twice thrice once "
    "double triple dozen quarter"
)
# What a chat message asks for when a small model serves it well: to translate, rewrite,
# summarise or classify a given text, a short piece of writing (a tweet, a haiku, a
# birthday message), a synonym. Words with a common technical sense (sort, format, convert,
# extract, name, simple, short) and greetings (which score low without help) are left out:
# "Hi! Implement a B-tree in C" and "Give a short proof that..." are hard requests.
CHAT_EASY = _word_set(
    "translate translation summarize summarise summary tldr rewrite reword rephrase "
    "paraphrase shorten concise proofread grammar typo typos bulleted bullet bullets "
    "alphabetical alphabetically classify sentiment spam tweet caption slogan tagline "
    "headline headlines greeting birthday congratulations haiku limerick poem rhyme rhymes "
    "joke jokes pun synonym synonyms antonym antonyms polite politely friendly friendlier"
)
# Words of a hard request beside the reasoning and code keywords: any of them in a short
# request withholds the prior ("Summarize the proof of Fermat's last theorem", "rewrite
# this bash loop so it handles filenames with spaces"); programming languages among them.
CHAT_HARD = _word_set(
    "proof proofs theorem theorems lemma implement implementation code program compiler "
    "interpreter parser sql query design architecture optimize optimise optimal debug "
    "refactor concurrency concurrent distributed database kernel protocol integral "
    "diagnosis differential treatment dosage legal liability tax python rust haskell bash "
    "shell javascript typescript java golang kotlin scala ruby php perl cpp ocaml elixir "
    "erlang clojure lisp fortran cobol assembly verilog vhdl cuda regex"
)
_CUES = (FEATURE_NAMES.index("kw_reasoning"), FEATURE_NAMES.index("kw_code"))
_SIMPLE = FEATURE_NAMES.index("kw_simple")
_CHAT_WORD = re.compile(r"[^\W_]+")
_DIGIT_RUN = re.compile(r"\d+")
_CHOICE = FEATURE_NAMES.index("multiple_choice")


def chat_prior(body: dict, x: list[float], keywords: dict | None = None) -> float:
    """What the chat-message prior adds to the log-odds of ``body``: 0 but for a short
    open request of at most one number (CHAT_CHARS) whose last message asks for something
    easy (CHAT_EASY, or the policy's own ``simple`` keywords) and which holds no reasoning
    or code keyword (``x``: its features under the policy's ``keywords``) nor a word of
    CHAT_HARD. It only lowers a score: a request it does not recognise keeps its own."""
    if x[_CHOICE] or x[TOKENS] >= _CHAT_TOKENS or any(x[i] for i in _CUES):
        return 0.0
    # Short by the test above: reading its words again costs a few microseconds.
    text = asked_text(prompt_parts(body)[0])
    # Runs of digits of any script, as the steps features count quantities (\d): "１２" and
    # "١٢" are numbers too. Counted in ASCII only, a short request with two such numbers
    # got this prior and was read by the learned head's maths weights (two quantities, so
    # maths-shaped) at once, a request each reading called something else.
    numbers = len(_DIGIT_RUN.findall(text))
    if numbers >= 2:
        return 0.0
    # Words split at any character that is not a letter or digit: curly quotes, dashes and
    # no-break spaces too ("“Hello” — thanks\xa0a lot"), which WORD_BYTES keeps in a word.
    words = _CHAT_WORD.findall(text.lower())
    if numbers + sum(1 for w in words if w in NUMBER_WORDS) >= 2:
        return 0.0
    if not CHAT_HARD.isdisjoint(words):
        return 0.0
    # What is asked now: a greeting or a rewrite earlier in the conversation does not make
    # the request after it easy.
    ask = _last_ask(body, text)
    if not CHAT_EASY.isdisjoint(_CHAT_WORD.findall(ask.lower())):
        return CHAT_LOGIT
    if keywords and keywords.get("simple") and features({"prompt": ask}, keywords)[_SIMPLE]:
        return CHAT_LOGIT
    return 0.0


def _last_ask(body: dict, text: str) -> str:
    """The text of a conversation's last user message (of its last 128 messages); of
    another request, ``text``, its whole prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages[-MAX_READ_ITEMS // 2 :]):
            if isinstance(m, dict) and m.get("role") == "user":
                return "\n".join(prompt_parts({"messages": [m]})[0])
    return text


def score_features(x: list[float], model: dict, offset: float = 0.0) -> float:
    """The calibrated probability that the strong model is needed (logistic model). Each
    feature is read within the range it had where the model was fitted (``low``..``high``,
    when the model has them): past it the linear model is an extrapolation, and a prompt in
    another script (its share of non-ASCII text, near 0 in the English development set)
    scored 0.998 whatever it asked. ``offset``: added to the log-odds (chat_prior)."""
    z = model["bias"] + prior_logit(x) + offset
    n = len(x)
    low, high = model.get("low") or (-math.inf,) * n, model.get("high") or (math.inf,) * n
    for v, mean, scale, w, lo, hi in zip(
        x, model["mean"], model["scale"], model["weights"], low, high, strict=True
    ):
        z += w * ((lo if v < lo else hi if v > hi else v) - mean) / scale
    if z < -30:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def within_range(x: list[float], model: dict) -> list[float]:
    """The features within the range they had in the development set (the rules model's
    ``low``..``high``): the learned head was fitted on the same features of the same set."""
    low, high = model.get("low"), model.get("high")
    if not low or not high:
        return x
    return [lo if v < lo else hi if v > hi else v for v, lo, hi in zip(x, low, high, strict=True)]


def rules_score(body: dict, keywords: dict | None = None) -> float:
    x = features(body, keywords)
    return score_features(x, rules_model(), chat_prior(body, x, keywords))


# A completions prompt given as a list holds several prompts, one completion each; the
# request goes to one model, so it is routed by its hardest prompt. Each is scored as a
# prompt of its own (joined, their count read as lines of one prompt: ["hello", "world"]
# scored 0.20 where "hello" scores 0.07). At most this many are scored, the longest ones.
MAX_LISTED_PROMPTS = 16


def listed_prompts(body: dict) -> list[str] | None:
    """The distinct prompts of a completions body whose ``prompt`` is a list of two or
    more texts (at most MAX_LISTED_PROMPTS, the longest, in list order), else None."""
    if "messages" in body:
        return None
    prompt = body.get("prompt")
    if not isinstance(prompt, list):
        return None
    texts = [p for p in prompt if isinstance(p, str)]
    if len(texts) < 2:  # one text (or token ids): the prompt as it is
        return None
    if len(texts) > 4 * MAX_LISTED_PROMPTS:
        # Of a long list, the longest texts are picked by length first, and only they are
        # told apart: hashing a million texts to tell them apart took a second, and sorting
        # them by length half a second. When the longest are mostly copies of each other,
        # the whole list is read (as before).
        length_of = list(map(len, texts)).__getitem__
        top = heapq.nlargest(4 * MAX_LISTED_PROMPTS, range(len(texts)), key=length_of)
        if len({texts[i] for i in top}) >= MAX_LISTED_PROMPTS:  # (of equal lengths, the first)
            texts = [texts[i] for i in sorted(top)]
    texts = list(dict.fromkeys(texts))
    if len(texts) > MAX_LISTED_PROMPTS:
        longest = sorted(range(len(texts)), key=lambda i: -len(texts[i]))[:MAX_LISTED_PROMPTS]
        texts = [texts[i] for i in sorted(longest)]
    return texts


def score(policy: SmartPolicy, body: dict, classifier: str) -> float:
    """The difficulty score (0-1) of a request under ``classifier``; of a list of prompts,
    the highest of theirs (listed_prompts)."""
    texts = listed_prompts(body)
    if texts is not None:
        # The learned classifier embeds at most its one-prompt budget of characters for the
        # whole list (each prompt from its ends): its tokenizer holds the GIL.
        share = 1 / len(texts)
        return max(_score(policy, {**body, "prompt": t}, classifier, share) for t in texts)
    return _score(policy, body, classifier)


def _score(policy: SmartPolicy, body: dict, classifier: str, share: float = 1.0) -> float:
    """The score of one prompt; ``share``: of the learned classifier's characters to embed
    (MAX_CHARS), for one prompt of a list."""
    if classifier == "learned":
        from core import smart_learned  # the optional extra; checked at configuration time

        x, model = features(body), rules_model()
        if model.get("low") and x[TOKENS] < model["low"][TOKENS]:
            # Shorter than any prompt the head was trained on (about 14 tokens: greetings,
            # one-line questions). Its embedding of such a prompt is an extrapolation (it
            # put "hi" at 0.20, the 80th percentile, so a greeting went to the top tier);
            # the rules score reads the length within its range. Same label, same scale.
            return rules_score(body, policy.keywords)
        text, _ = prompt_text(body)
        half = int(smart_learned.MAX_CHARS * share) // 2
        if share < 1.0 and len(text) > 2 * half:
            text = text[:half] + "\n" + text[-half:]
        # The chat prior reads the policy's own keyword lists, as under rules (the head
        # reads the built-in ones it was trained on).
        own = features(body, policy.keywords) if policy.keywords else x
        offset = prior_logit(x) + chat_prior(body, own, policy.keywords)
        steps = steps_features(body, x, share)
        shaped = chat_shaped(x, steps)
        if shaped:
            offset += smart_learned.model().get("chat_raise", 0.0)
        maths = not shaped and not x[_CHOICE]  # maths_shaped(), its chat_shaped() read once
        return smart_learned.score(text, within_range(x, model), steps, offset, maths)
    return rules_score(body, policy.keywords)


_QUANTITIES = smart_steps.NAMES.index("quantities")
_NO_QUANTITY, _ONE_QUANTITY = math.log1p(0.5), math.log1p(1.5)  # between the counts' logs


def chat_shaped(x: list[float], steps: list[float]) -> bool:
    """Whether the learned head's chat raise (smart_learned.json's ``chat_raise``) applies:
    an open request (``x``: its rules features) that is not a word problem, by its steps
    features: no quantity at all (nothing to compute from, at any length), or at most one
    in a request shorter than CHAT_CHARS. The head's steps weights are kept >= 0 and carry
    the open problems' difficulty, the other weights making up for them on maths problems:
    a request that is not one got the make-up without the steps, and read as a problem of
    few steps (hard chat went to the cheap tier). Every development-set open prompt is a
    maths problem with two quantities or more, or one in 280 characters or more: none is
    chat-shaped, so no figure measured on the set moves. The raise was set on a chat set
    written blind, by a rule fixed before it was scored (bench/experiments/README.md)."""
    if x[_CHOICE]:
        return False
    q = steps[_QUANTITIES]
    return q < _NO_QUANTITY or (q < _ONE_QUANTITY and x[TOKENS] < _CHAT_TOKENS)


def maths_shaped(x: list[float], steps: list[float]) -> bool:
    """Whether the learned head reads a request with its maths weights (smart_learned.logit):
    an open request (``x``: its rules features) that is not chat-shaped, so a word problem
    by its steps features. Every development-set GSM8K problem is one, no MMLU question
    (multiple choice) is: the maths weights order maths problems, the main ones the rest."""
    return not x[_CHOICE] and not chat_shaped(x, steps)


def steps_features(body: dict, x: list[float], share: float = 1.0) -> list[float]:
    """The learned head's "reasoning steps" features of ``body`` (core.smart_steps), read
    from the text the rules features read (``x``: those features, whose multiple-choice
    flag zeroes them); ``share``: of the parse's characters (smart_steps.MAX_CHARS), for one
    prompt of a list, as the embedding's. bench/smart_routing.py trains the head on these."""
    text = asked_text(prompt_parts(body)[0])
    return smart_steps.features(text, bool(x[_CHOICE]), int(smart_steps.MAX_CHARS * share))


def end_user(body: dict) -> str | None:
    """The end user a request names, as the APIs let an app say it: `user` (chat,
    completions, embeddings, the Responses API), `safety_identifier` (the Responses API's
    newer name) or Anthropic's `metadata.user_id`. None when it names none."""
    user = body.get("user") or body.get("safety_identifier")
    if not user:
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) and user else None


def sticky_draw(org_id, policy_name: str, user: str) -> float:
    """The A/B draw of one end user of one policy, uniform in [0, 1) over users and the same
    for every request of theirs: a user stays on one arm (a conversation is not split
    between classifiers), and each policy draws its users afresh."""
    digest = hashlib.blake2b(
        f"{org_id}\x00{policy_name}\x00{user}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm(policy: SmartPolicy, draw: float) -> str:
    """What routes one request: the policy's classifier, or its A/B arm for a share of
    requests (``draw``: uniform in [0, 1)); "rules" for "learned" where it cannot run."""
    chosen = policy.ab_arm if policy.ab_share and draw < policy.ab_share else policy.classifier
    if chosen == "learned" and not learned_ready():
        return "rules"  # a snapshot made where the extra is installed, served where it is not
    return chosen


def choose(policy: SmartPolicy, body: dict, draw: float) -> tuple[str, float | None, int]:
    """(classifier or "strong", score or None, tier index) of one request."""
    chosen = arm(policy, draw)
    if chosen == "strong":
        return chosen, None, len(policy.tiers) - 1
    s = score(policy, body, chosen)
    return chosen, s, tier_index(policy, chosen, s)


def tier_index(policy: SmartPolicy, classifier: str, score: float) -> int:
    """The tier a score of ``classifier`` goes to under ``policy``: the first whose
    threshold (on that classifier's scale, core.smart.arm_thresholds) the score is under."""
    for i, t in enumerate(policy.arm_thresholds.get(classifier, policy.thresholds)):
        if score < t:
            return i
    return len(policy.tiers) - 1


@cache
def learned_ready() -> bool:
    """Whether this process can run the learned classifier (checked once)."""
    from core import smart_learned

    ready = smart_learned.missing() is None
    if not ready:
        log.error("a smart policy uses the learned classifier, not installed here; using rules")
    return ready


def _uses_learned(policy: SmartPolicy | None) -> bool:
    return policy is not None and "learned" in (policy.classifier, policy.ab_arm)


def prewarm(snapshot) -> bool:
    """Load the learned classifier (about 0.6 s, once per process) when a published
    snapshot has a policy that uses it, so no request waits for the load. Called where
    snapshots are published (off the request path); True once it is loaded."""
    from core import smart_learned

    if smart_learned.encoder.cache_info().currsize:
        return True
    for org in snapshot.orgs.values():
        if _uses_learned(org.smart) or any(
            _uses_learned(p.smart) for p in org.routing_policies.values()
        ):
            if learned_ready():
                started = time.perf_counter()
                smart_learned.encoder()
                smart_learned.model()
                log.info("learned classifier loaded (%.2f s)", time.perf_counter() - started)
                return True
            return False
    return False


def top_deployment(policy: SmartPolicy, candidates: list, top_deps) -> object | None:
    """The top tier's deployment a request is compared with (its usage row's cost_top_tier):
    the one it would have gone to had it scored hard, i.e. the first of the top tier's
    deployments in its candidates' order (the policy's ``within`` order, those the key may
    use, healthy ones first); the top tier's first active deployment when the key may use
    none of them; None when the top tier has no active deployment."""
    for dep in candidates:
        if dep.model == policy.top:
            return dep
    return top_deps[0] if top_deps else None


def cost_top_tier(top_dep, served, counts, cost: float, tier: str = "") -> float | None:
    """What a smart-routed request's tokens would have cost on its policy's top tier: what
    they did cost when a deployment of the top tier served them (nothing saved, nothing
    lost, whichever of its deployments it was), else ``counts`` priced at ``top_dep``."""
    if top_dep is None:
        return None
    if served is not None and served.model == top_dep.model:
        return round(cost, 8)
    return round(top_dep.cost(*counts, tier=tier), 8)
