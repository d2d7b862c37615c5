"""The learned head's training objective (bench/smart_routing.py): log loss, L2, and the
ranking term on the open maths problems. Checked against the objective itself, computed
here independently, not against numbers copied from a run."""

import json
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import smart_routing  # noqa: E402


def _rows(gains, family="gsm8k"):
    outcome = {1: (False, True), 0: (True, True), -1: (True, False)}
    rows = []
    for g in gains:
        weak, strong = outcome[g]
        rows.append(
            {
                "family": family,
                "weak_correct": weak,
                "strong_correct": strong,
                "y": int(not weak and strong),
            }
        )
    return rows


def test_the_ranking_pairs_are_every_maths_pair_where_the_strong_model_adds_more():
    rows = _rows([1, 0, -1, 1]) + _rows([1, -1], family="mmlu")
    a, b, scale = smart_routing.ranking_pairs(rows, weight=2.0)
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    # gains 1,0,-1,1 on rows 0..3: each +1 above 0 and -1, 0 above -1; ties and MMLU rows
    # (4, 5) never pair.
    assert pairs == {(0, 1), (0, 2), (3, 1), (3, 2), (1, 2)}
    # Weighed `weight` times as much in all as the 4 maths rows' own log loss.
    assert scale == pytest.approx(2.0 * 4 / 5)
    assert smart_routing.ranking_pairs(rows, weight=0) is None
    assert smart_routing.ranking_pairs(_rows([0, 0, 0])) is None


def _objective(w, z, y, l2, diff, pair_scale):
    t = z @ w
    loss = (np.logaddexp(0, t) - y * t).sum() + 0.5 * l2 * (w[1:] ** 2).sum()
    if diff is not None:
        loss += pair_scale * np.logaddexp(0, -(diff @ w)).sum()
    return loss


def _synthetic(seed=0, n=120, d=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    gains = rng.choice([1, 0, -1], size=n, p=[0.3, 0.55, 0.15])
    # The label agrees with the gain only loosely, so the ranking term has work to do.
    rows = _rows(gains.tolist())
    x[:, 0] += 0.8 * gains
    return x, rows


@pytest.mark.parametrize("weight", [0.0, 1.0, 5.0])
def test_the_fit_is_the_minimum_of_its_objective(weight):
    x, rows = _synthetic()
    l2 = 3.0
    pairs = smart_routing.ranking_pairs(rows, weight)
    head = smart_routing.fit_np(x, [r["y"] for r in rows], l2, pairs)
    mean, scale = np.asarray(head["mean"]), np.asarray(head["scale"])
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    y = np.array([r["y"] for r in rows], dtype=float)
    diff = z[pairs[0]] - z[pairs[1]] if pairs else None
    w = np.concatenate([[head["bias"]], head["weights"]])
    best = _objective(w, z, y, l2, diff, pairs[2] if pairs else 0)
    rng = np.random.default_rng(1)
    for _ in range(50):  # no nearby point is lower
        nudged = w + rng.normal(scale=1e-3, size=w.shape)
        assert _objective(nudged, z, y, l2, diff, pairs[2] if pairs else 0) >= best - 1e-9
    # and the gradient, by central differences, is zero there
    eps = 1e-5
    grad = [
        (
            _objective(w + eps * e, z, y, l2, diff, pairs[2] if pairs else 0)
            - _objective(w - eps * e, z, y, l2, diff, pairs[2] if pairs else 0)
        )
        / (2 * eps)
        for e in np.eye(len(w))
    ]
    assert np.abs(grad).max() < 1e-4


def _concordance(scores, gains):
    s, g = np.asarray(scores), np.asarray(gains)
    d = s[:, None] - s[None, :]
    better = g[:, None] > g[None, :]
    return ((d > 0) + 0.5 * (d == 0))[better].mean()


def test_the_ranking_term_orders_the_training_problems_by_what_the_strong_model_adds():
    x, rows = _synthetic(seed=3)
    gains = [int(r["strong_correct"]) - int(r["weak_correct"]) for r in rows]
    ys = [r["y"] for r in rows]

    plain = _concordance(_scores(x, smart_routing.fit_np(x, ys, 3.0)), gains)
    ranked = _concordance(_scores(x, smart_routing.fit_head(rows, x, 3.0)), gains)
    assert ranked > plain


def _scores(x, head):
    z = (x - np.asarray(head["mean"])) / np.asarray(head["scale"])
    return head["bias"] + z @ np.asarray(head["weights"])


def test_the_committed_learned_head_was_trained_with_the_scripts_settings():
    """A changed L2 or ranking weight in the script without `--train` would leave the
    committed head and the documented figures measuring something else."""
    head = json.loads((ROOT / "core" / "smart_learned.json").read_text())
    assert head["l2"] == smart_routing.LEARNED_L2
    assert head["ranking_weight"] == smart_routing.PAIRWISE_WEIGHT
    assert head["maths"]["ranking_weight"] == smart_routing.MATHS_RANKING_WEIGHT


def _maths_fit(seed=5):
    # the first 60 rows are "multiple choice" (another family, no ranking pairs), the other
    # 101 maths-shaped: each of their 101 percentiles is one of them
    x, rows = _synthetic(seed=seed, n=161)
    for r in rows[:60]:
        r["family"] = "mmlu"
    mask = [i >= 60 for i in range(len(rows))]
    return x, rows, mask, smart_routing.fit_learned(rows, x, 3.0, mask)


def test_the_maths_weights_are_the_fit_at_their_ranking_weight_and_the_main_ones_unchanged():
    x, rows, mask, head = _maths_fit()
    main = smart_routing.fit_head(rows, x, 3.0)
    maths = smart_routing.fit_head(rows, x, 3.0, smart_routing.MATHS_RANKING_WEIGHT)
    assert head["weights"] == main["weights"] and head["bias"] == main["bias"]
    assert head["maths"]["weights"] == maths["weights"]
    assert maths["weights"] != main["weights"]


def test_maths_shaped_rows_keep_the_main_distribution_in_the_maths_order():
    """Carried to the main scale, the maths-shaped rows' scores have the main weights'
    percentiles over them (the slider's quantiles and the tiers they land in unchanged) and
    the maths weights' order; the other rows are scored by the main weights alone."""
    x, rows, mask, head = _maths_fit()
    idx = [i for i, m in enumerate(mask) if m]
    got = np.asarray(smart_routing.learned_scores(x, head, mask))
    z = np.log(got / (1 - got))
    main = _scores(x, head)
    maths = _scores(x, {**head["maths"], "mean": head["mean"], "scale": head["scale"]})
    assert np.allclose(z[:60], main[:60], atol=1e-9)
    assert np.allclose(np.sort(z[idx]), np.sort(main[idx]), rtol=0, atol=1e-5)
    assert (np.argsort(z[idx], kind="stable") == np.argsort(maths[idx], kind="stable")).all()
    assert not (np.argsort(main[idx]) == np.argsort(maths[idx])).all()  # the order did move
    # without a mask (or with no maths-shaped rows to fit on) it is the main head alone
    assert smart_routing.learned_scores(x, head) == pytest.approx(1 / (1 + np.exp(-main)))
    assert "maths" not in smart_routing.fit_learned(rows, x, 3.0, [False] * len(rows))


def test_carry_is_monotone_and_continuous_and_shifts_past_the_ends():
    from core.smart_learned import carry

    src = np.array([-2.0, -1.0, 0.5, 2.0])
    dst = np.array([-3.0, -1.5, -1.0, 1.0])
    zs = np.linspace(-6, 6, 2001)
    out = np.array([carry(z, src, dst) for z in zs])
    assert (np.diff(out) > 0).all()
    assert [carry(z, src, dst) for z in src] == pytest.approx(dst.tolist())
    assert carry(-4.0, src, dst) == pytest.approx(-5.0)  # slope 1 below the first knot
    assert carry(3.5, src, dst) == pytest.approx(2.5)  # and above the last
    assert carry(1.25, src, dst) == pytest.approx(0.0)  # linear between knots


@pytest.mark.skipif(not smart_routing.DATA.is_file(), reason="the development set is not here")
def test_train_reproduces_the_committed_models(tmp_path, capsys):
    """`--train` on the development set gives the committed models: a change to a feature
    (the rules', the embedding's, the steps parse's) without retraining fails here. The
    rules model byte for byte; the learned head to within its solver's last digits (its
    bytes depend on how many threads numpy's linear algebra runs on: about 1e-9)."""
    if not smart_routing.learned_available():
        pytest.skip("the smart extra (requirements-smart.txt) is not installed")
    smart_routing.main(["--train", "--model-dir", str(tmp_path)])
    core = ROOT / "core"
    assert (tmp_path / "smart_rules.json").read_bytes() == (core / "smart_rules.json").read_bytes()
    made = json.loads((tmp_path / "smart_learned.json").read_text())
    committed = json.loads((core / "smart_learned.json").read_text())
    assert made.keys() == committed.keys()
    _same_head(made, committed)


def _same_head(made, committed, where=""):
    assert made.keys() == committed.keys(), where
    for key, value in committed.items():
        if isinstance(value, dict):  # the maths weights
            _same_head(made[key], value, f"{where}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], float):
            assert np.allclose(made[key], value, rtol=0, atol=1e-6), where + key
        elif isinstance(value, float):
            assert made[key] == pytest.approx(value, abs=1e-6), where + key
        else:
            assert made[key] == value, where + key
