"""Re-calibration (smart_recalibrate): any cut it computes is saved exactly, with 3 tiers
and more and scores far below 0.000002 (such a cut was refused as "not ascending"); it reads
the rated rows a chunk at a time and moves the threshold where reading them all at once
did."""

import io
import random
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing import smart_calibration
from billing.models import UsageRecord
from billing.smart_calibration import smart_recalibrate
from core import smart
from gateway.tests.conftest import ACTOR
from gateway.tests.test_smart_routing import needs_learned

AN_HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def _rows(org, rated, *, tier, policy="saver", classifier="rules"):
    """Rated usage rows: ``rated`` is (score, feedback) pairs."""
    UsageRecord.objects.bulk_create(
        UsageRecord(
            id=uuid.uuid4(),
            org=org,
            created_at=AN_HOUR_AGO,
            model_requested="auto",
            model_used=tier,
            status="success",
            input_tokens=10,
            output_tokens=5,
            cost=Decimal("0.0001"),
            cost_top_tier=Decimal("0.002"),
            route_tier=tier,
            routing_policy=policy,
            route_classifier=classifier,
            route_score=score,
            feedback_score=feedback,
        )
        for score, feedback in rated
    )


def _policy(org, tiers, spec):
    from governance import services as gov

    return gov.routing_policy_save(
        actor=ACTOR, org=org, name="saver", strategy="smart", models=list(tiers), smart=spec
    )


def _previous_new_top(rated_below, target, current, n_tiers):
    """The top threshold as the re-calibration computes it, from every rated row below the
    top tier in one sorted list (the reference for reading them in chunks)."""
    below = sorted(rated_below)
    groups: dict[float, list] = {}
    for score, feedback in below:
        groups.setdefault(score, []).append(feedback)
    scores = sorted(groups)
    total, count, kept = 0.0, 0, None
    for i, score in enumerate(scores):
        total += sum(groups[score])
        count += len(groups[score])
        if total / count >= target:
            kept = i  # the highest score that held, whatever fell short below it
    if kept == len(scores) - 1:  # all held: a step past the highest rated score
        held = smart_calibration._just_above(scores[-1], None)
        a = smart.aggressiveness_for([*current.thresholds[:-1], held], current.classifier)
        raised = smart.thresholds_for(min(a + 0.1, 1.0), n_tiers, current.classifier)[-1]
        return max(current.thresholds[-1], raised, held)
    i = kept or 0
    return smart_calibration._just_above(scores[i], scores[i + 1] if i + 1 < len(scores) else None)


# ------------------------------------------------------------------------------ tiny cuts
@pytest.mark.django_db
@pytest.mark.parametrize("n_tiers", [3, 4, 6])
@pytest.mark.parametrize("scale", [1e-7, 1.5e-6 / 40, 1e-9, 1e-13])
def test_it_saves_a_cut_below_two_millionths_exactly_with_three_tiers_and_more(
    org_a, n_tiers, scale
):
    tiers = [f"t{i}" for i in range(n_tiers)]
    _policy(org_a, tiers, {"aggressiveness": 0.5})
    # Scores k x scale: good answers up to the 5th, bad ones after; the top tier rates 1.0.
    below = [((k + 1) * scale, 1.0 if k < 5 else 0.0) for k in range(40)]
    _rows(org_a, below, tier=tiers[0])
    _rows(org_a, [(0.9, 1.0)] * 5, tier=tiers[-1])
    current = smart.resolve({"aggressiveness": 0.5}, tiers)
    expected = _previous_new_top(below, 0.95, current, n_tiers)
    assert expected < 2e-6

    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")

    from governance.models import RoutingPolicy

    saved = RoutingPolicy.objects.get(name="saver").smart["thresholds"]
    assert moved["new"] == saved[-1] == expected  # exactly, not rounded or raised to 1e-6
    assert len(saved) == n_tiers - 1
    assert all(0 < a < b for a, b in zip(saved, saved[1:], strict=False)), saved
    policy = smart.resolve({"thresholds": saved}, tiers)  # accepted as it is
    assert policy.tier_index(5 * scale) < n_tiers - 1  # the last good score stays below
    assert policy.tier_index(6 * scale) == n_tiers - 1  # the first bad one goes to the top


@pytest.mark.django_db
def test_lower_thresholds_under_the_new_top_stay_where_they_were(org_a):
    tiers = ["a", "b", "c", "d"]
    _policy(org_a, tiers, {"thresholds": [0.01, 0.02, 0.5]})
    below = [(0.03 + k / 1000, 1.0 if k < 20 else 0.0) for k in range(40)]
    _rows(org_a, below, tier="a")
    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
    from governance.models import RoutingPolicy

    assert RoutingPolicy.objects.get(name="saver").smart["thresholds"] == [
        0.01,
        0.02,
        moved["new"],
    ]
    assert 0.049 < moved["new"] < 0.051


@pytest.mark.django_db
def test_the_command_says_a_tiny_threshold_in_full(org_a):
    tiers = ["a", "b", "c"]
    _policy(org_a, tiers, {"aggressiveness": 0.5})
    _rows(org_a, [((k + 1) * 1e-8, 1.0 if k < 3 else 0.0) for k in range(40)], tier="a")
    out = io.StringIO()
    call_command("smart_recalibrate", "--org", org_a.slug, "--policy", "saver", stdout=out)
    # just above 3e-08, under 4e-08: halfway
    assert "-> 0.000000035 from 40 rated requests" in out.getvalue(), out.getvalue()


# ------------------------------------------------------------------ the highest score that held
def _saved(name="saver"):
    from governance.models import RoutingPolicy

    return RoutingPolicy.objects.get(name=name).smart["thresholds"]


@pytest.mark.django_db
@pytest.mark.parametrize("n_tiers", [2, 3])
def test_one_bad_rating_on_the_easiest_prompt_does_not_pull_the_threshold_down(org_a, n_tiers):
    """The outside check's case: a greeting rated down, then 40 plain questions of one
    score rated up (97.6 % good below the top tier): the threshold is not set just above
    the greeting (which sent every plain question to the top tier, and with 3 tiers
    squeezed the middle one out); it stays, or goes a step past the highest rated score."""
    tiers = [f"t{i}" for i in range(n_tiers)]
    _policy(org_a, tiers, {"aggressiveness": 0.5})
    old = smart.resolve({"aggressiveness": 0.5}, tiers).thresholds
    _rows(org_a, [(0.01, 0.0)] + [(0.10, 1.0)] * 40, tier=tiers[0])
    _rows(org_a, [(0.9, 1.0)] * 5, tier=tiers[-1])

    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")

    from governance.models import RoutingPolicy

    policy = smart.resolve(RoutingPolicy.objects.get(name="saver").smart, tiers)
    assert moved["new"] == policy.thresholds[-1] >= old[-1]
    assert policy.thresholds[:-1] == old[:-1]  # the lower ones stay where they were
    assert policy.tier_index(0.10) < n_tiers - 1


@pytest.mark.django_db
def test_the_cut_is_the_highest_score_that_held_past_a_dip(org_a):
    """Good easy prompts, a few bad ones, many good ones, then bad ones: the requests up to
    the good band's score keep 95 % together, so the cut falls just above it, not just
    above the easy ones where the running average first dipped."""
    _policy(org_a, ["a", "b"], {"aggressiveness": 0.5})
    below = [(0.01, 1.0)] * 10 + [(0.02, 0.0)] * 3 + [(0.05, 1.0)] * 60 + [(0.08, 0.0)] * 10
    _rows(org_a, below, tier="a")
    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
    assert moved["new"] == _saved()[-1] == pytest.approx(0.050001)
    assert moved["new"] == _previous_new_top(below, 0.95, smart.resolve({}, ["a", "b"]), 2)


@pytest.mark.django_db
def test_the_summary_says_when_lower_thresholds_moved_under_the_new_top(org_a):
    tiers = ["a", "b", "c"]
    _policy(org_a, tiers, {"thresholds": [0.05, 0.5]})
    _rows(org_a, [(0.01, 0.0)] * 40, tier="a")
    out = io.StringIO()
    call_command("smart_recalibrate", "--org", org_a.slug, "--policy", "saver", stdout=out)
    saved = _saved()
    assert saved[1] == pytest.approx(0.010001) and 0 < saved[0] < saved[1]
    said = out.getvalue().strip()
    assert said.startswith("saver: top threshold 0.5000 -> 0.0100 from 40 rated requests")
    assert said.endswith(f"(lower thresholds 0.0500 -> {saved[0]:.4f})"), said


# ------------------------------------------------------------------------------ bounded memory
@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(8))
def test_reading_in_chunks_moves_the_threshold_where_the_whole_list_did(org_a, seed, monkeypatch):
    rng = random.Random(seed)
    n_tiers = rng.choice([2, 3, 5])
    tiers = [f"m{i}" for i in range(n_tiers)]
    spec = rng.choice([{"aggressiveness": rng.random()}, {}])
    _policy(org_a, tiers, spec)
    # Few distinct scores (the rules classifier's greetings) or many; ratings of any value
    # (their sums' rounding must come out as before), good below a score, worse above.
    n = rng.randint(30, 400)
    palette = [round(rng.random(), 3) for _ in range(rng.choice([3, 12, 1000]))]
    edge = rng.random()
    easiest_bad = rng.random() < 0.5  # a dip before the good band (the highest held counts)
    below = []
    for _ in range(n):
        score = rng.choice(palette)
        good = (score < edge or rng.random() < 0.2) and not (easiest_bad and score == min(palette))
        below.append((score, rng.uniform(0.85, 1.0) if good else rng.uniform(0.0, 0.6)))
    _rows(org_a, below, tier=rng.choice(tiers[:-1]))
    _rows(org_a, [(0.99, 1.0)] * 3, tier=tiers[-1])
    # Rows that are not read: another classifier's, a failover's, another policy's.
    _rows(org_a, [(0.01, 0.0)] * 5, tier=tiers[0], classifier="learned")
    _rows(org_a, [(0.01, 0.0)] * 5, tier=tiers[0], policy="other")
    current = smart.resolve(spec, tiers)
    expected = _previous_new_top(below, 0.95, current, n_tiers)
    monkeypatch.setattr(smart_calibration, "CHUNK", rng.choice([1, 7, 2000]))

    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver", min_rated=1)

    assert moved["new"] == expected
    assert moved["rated"] == n


@pytest.mark.django_db
def test_a_recalibration_s_memory_does_not_grow_with_its_rated_rows(org_a):
    tiers = ["a", "b", "c"]
    _policy(org_a, tiers, {"aggressiveness": 0.5})
    _rows(org_a, [(0.9, 1.0)] * 3, tier="c")
    rng = random.Random(1)

    def peak(rows: int) -> int:
        UsageRecord.objects.filter(route_tier="a").delete()
        _rows(org_a, [(rng.random(), 1.0) for _ in range(rows)], tier="a")
        tracemalloc.start()
        try:
            smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2_000), peak(40_000)
    # Every row in a list took about 150 bytes each: 6 MB for 40,000 rows.
    assert large < small + 1_500_000, (small, large)


# ------------------------------------------------------------------------------ kept keywords
@pytest.mark.django_db
def test_keywords_saved_before_a_rule_do_not_stop_a_recalibration(org_a):
    """A keyword refused since it was saved (punctuation alone, "—") is kept by a save that
    keeps it, and by a re-calibration, which saves the new thresholds with it."""
    from governance.models import RoutingPolicy

    tiers = ["small", "big"]
    rp = _policy(org_a, tiers, {"aggressiveness": 0.5})
    old = {"aggressiveness": 0.5, "keywords": {"code": ["kubernetes", "—"]}}
    RoutingPolicy.objects.filter(pk=rp.pk).update(smart=old)
    _rows(org_a, [(0.01 * (k + 1), 1.0 if k < 20 else 0.0) for k in range(40)], tier="small")
    _rows(org_a, [(0.9, 1.0)] * 5, tier="big")

    moved = smart_recalibrate(actor=ACTOR, org=org_a, name="saver", min_rated=1)

    saved = RoutingPolicy.objects.get(pk=rp.pk).smart
    assert saved["keywords"] == old["keywords"]
    assert saved["thresholds"] == [moved["new"]]


# ------------------------------------------------------------------------------ pressed again
@pytest.mark.django_db
@pytest.mark.parametrize("classifier", ["rules", pytest.param("learned", marks=needs_learned)])
def test_pressing_again_with_no_new_feedback_changes_nothing(org_a, classifier):
    """When every rated request below the top held, the threshold moves a step past the
    highest rated score. It moved a step from where the thresholds sat, so each press with
    no new feedback raised it again (0.14, 0.15, 0.17, 0.20, 0.24: past requests no rating
    said the cheaper tier could serve), and a press that moved nothing still saved a change
    (0.24111 -> 0.241114, a rounding of the slider's position) and wrote an audit row."""
    from governance.models import RoutingPolicy
    from orgs.models import AuditLog

    tiers = ["small", "big"]
    _policy(org_a, tiers, {"aggressiveness": 0.5, "classifier": classifier})
    (cut,) = smart.thresholds_for(0.5, 2, classifier)
    _rows(org_a, [(cut * k / 41, 1.0) for k in range(1, 41)], tier="small", classifier=classifier)
    _rows(org_a, [(0.9, 1.0)] * 5, tier="big", classifier=classifier)

    first = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
    assert first["new"] > first["old"]  # all held: a step up
    saved = RoutingPolicy.objects.get(name="saver").smart["thresholds"]
    audits = AuditLog.objects.count()
    for _ in range(3):
        again = smart_recalibrate(actor=ACTOR, org=org_a, name="saver")
        assert again["new_thresholds"] == again["old_thresholds"] == saved
        assert RoutingPolicy.objects.get(name="saver").smart["thresholds"] == saved
    assert AuditLog.objects.count() == audits
    assert "thresholds unchanged" in smart_calibration.recalibration_summary(again)

    # a new rating past the old highest, held: the next press steps again
    _rows(org_a, [(saved[-1] * 0.99, 1.0)] * 3, tier="small", classifier=classifier)
    assert smart_recalibrate(actor=ACTOR, org=org_a, name="saver")["new"] > saved[-1]


@pytest.mark.parametrize("score", [0.000249, 0.0157, 0.1251, 0.250001, 0.524287, 0.3, 1e-13])
def test_the_step_above_a_score_is_above_it(score):
    """A score goes below a threshold it is under: the cut just above a score that held
    must be above it. For about 1 in 80 scores of 6 decimals, score x 1e6 is a float just
    under a whole number and the next step was the score itself (0.1251 -> 0.1251), so
    the requests of that score went to the top tier."""
    above = smart_calibration._just_above(score, None)
    assert score < above <= score + 0.000001 + 1e-12
    assert smart_calibration._just_above(score, score + 1e-9) > score  # halfway, still above
