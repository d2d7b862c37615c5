"""The chat raise under the nonneg-steps head, chosen on the blind chat set by the rule fixed
before it was scored (README.md, "The rule for the chat raise"; helper h144, 2026-12-04).

    python chat_raise_select.py committed HEAD.json   # H0, E0: the committed head's counts
    python chat_raise_select.py grid H0 E0            # the nonneg head (core/), every r
    python chat_raise_select.py fixtures [R [HEAD.json]]  # the fixture sets' counts (core/
                                                      # head, its own raise unless R)

Each run is its own process (the head file is read once a process). Every request is sent
as one user message through the product's scoring (smart.score, as
gateway/tests/test_smart_chat_requests.py scores it) and counted as sent up when its score
is above the default slider's cut (thresholds_for(0.5, 2, "learned"), the head's quantiles).
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core import smart_learned  # noqa: E402

if sys.argv[1] == "committed" or (sys.argv[1] == "fixtures" and len(sys.argv) > 3):
    smart_learned.HEAD_FILE = Path(sys.argv[3] if sys.argv[1] == "fixtures" else sys.argv[2])

from core.smart import SmartPolicy, thresholds_for  # noqa: E402
from gateway.dataplane import smart  # noqa: E402

# The blind set the rule is applied to: CHAT_BLIND names another (chat_blind3_2026-12-04.jsonl
# for the head after nonneg-steps, nonneg-rank3).
BLIND = Path(__file__).with_name(os.environ.get("CHAT_BLIND", "chat_blind_2026-12-04.jsonl"))
FIXTURES = ROOT / "gateway" / "tests" / "fixtures"
POLICY = SmartPolicy(tiers=("lite", "pro"), thresholds=(0.5,))


def load(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def counts(rows, raise_=None):
    if raise_ is not None:
        smart_learned.model()["chat_raise"] = raise_
    (cut,) = thresholds_for(0.5, 2, "learned")
    up = {"hard": 0, "easy": 0}
    for r in rows:
        body = {"messages": [{"role": "user", "content": r["prompt"]}]}
        if smart.score(POLICY, body, "learned") > cut:
            up[r["label"]] += 1
    return up["hard"], up["easy"]


def main():
    what = sys.argv[1]
    if what == "committed":
        h, e = counts(load(BLIND))
        print(
            f"committed head ({smart_learned.HEAD_FILE}): hard up {h}/80, easy up {e}/80 ({BLIND.name})"
        )
    elif what == "grid":
        h0, e0 = int(sys.argv[2]), int(sys.argv[3])
        rows = load(BLIND)
        table = []
        for i in range(81):  # 0.00, 0.05, ..., 4.00
            r = round(0.05 * i, 2)
            h, e = counts(rows, r)
            table.append((abs(h - h0) + abs(e - e0), r, h, e))
        for d, r, h, e in table:
            print(f"r {r:.2f}: hard up {h}/80, easy up {e}/80, distance {d}")
        best = min(table, key=lambda t: (t[0], t[1]))  # ties to the smallest r
        print(
            f"chosen r = {best[1]:.2f} (hard up {best[2]}, easy up {best[3]}; "
            f"committed {h0}, {e0}; distance {best[0]})"
            + ("  -- the grid's end: the rule FAILED" if best[1] == 4.0 else "")
        )
    elif what == "fixtures":
        sets = {"120 requests": load(FIXTURES / "chat_requests.jsonl")}
        short = load(FIXTURES / "chat_short_requests.jsonl")
        for name in ("design", "held-out", "aimed", "natural"):
            sets[name] = [r for r in short if r["set"] == name]
        sets[f"blind ({BLIND.name})"] = load(BLIND)
        raise_ = None if len(sys.argv) < 3 else float(sys.argv[2])
        for name, rows in sets.items():
            h, e = counts(rows, raise_)
            nh = sum(r["label"] == "hard" for r in rows)
            ne = len(rows) - nh
            print(f"{name}: hard up {h}/{nh}, easy up {e}/{ne}")


if __name__ == "__main__":
    main()
