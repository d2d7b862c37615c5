"""The maths head's chat check (README.md, "The maths head"): each chat set's hard and easy
requests sent up at the default slider, and the AUC of hard over easy, under one head file.

    python maths_head_check.py HEAD.json [blind4]   # one process per head (read once)

Each request is one user message scored by the product (smart.score, as
gateway/tests/test_smart_chat_requests.py and chat_raise_select.py score it); sent up =
above thresholds_for(0.5, 2, "learned"), the head's quantiles. `blind4` adds
chat_blind4_2026-12-04.jsonl, scored only once the other sets have been read.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core import smart_learned  # noqa: E402

smart_learned.HEAD_FILE = Path(sys.argv[1])

from core.smart import SmartPolicy, thresholds_for  # noqa: E402
from gateway.dataplane import smart  # noqa: E402

HERE = Path(__file__).parent
FIXTURES = ROOT / "gateway" / "tests" / "fixtures"
POLICY = SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))


def load(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def auc(hard, easy):
    if not hard or not easy:
        return None
    wins = sum((h > e) + 0.5 * (h == e) for h in hard for e in easy)
    return wins / (len(hard) * len(easy))


def main():
    sets = {"120": load(FIXTURES / "chat_requests.jsonl")}
    short = load(FIXTURES / "chat_short_requests.jsonl")
    for name in ("design", "held-out", "aimed", "natural"):
        sets[name] = [r for r in short if r["set"] == name]
    for name in ("chat_blind", "chat_blind2", "chat_blind3"):
        sets[name] = load(HERE / f"{name}_2026-12-04.jsonl")
    if "blind4" in sys.argv[2:]:
        sets["chat_blind4"] = load(HERE / "chat_blind4_2026-12-04.jsonl")
    (cut,) = thresholds_for(0.5, 2, "learned")
    out = {}
    for name, rows in sets.items():
        scores = {"hard": [], "easy": []}
        for r in rows:
            body = {"messages": [{"role": "user", "content": r["prompt"]}]}
            scores[r["label"]].append(smart.score(POLICY, body, "learned"))
        a = auc(scores["hard"], scores["easy"])
        out[name] = {
            "hard_up": sum(s > cut for s in scores["hard"]),
            "hard": len(scores["hard"]),
            "easy_up": sum(s > cut for s in scores["easy"]),
            "easy": len(scores["easy"]),
            "auc": None if a is None else round(a, 3),
        }
        print(name, out[name])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
