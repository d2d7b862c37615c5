"""Budgets: spend per period against an amount, threshold alerts that fire once, and the
hard caps the gateway enforces (through the config snapshot, never a query per request)."""

import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from celery import shared_task
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from core.config_version import ORG_ONLY, changes_since, config_version_bump, current_stamp
from core.months import month_bounds
from core.numbers import money
from core.tasks import enqueue
from core.text import one_line
from gateway.dataplane.snapshot import Block
from orgs.audit import Actor, audit_record, record_config_change, record_config_delete
from orgs.models import Membership, Role

from .models import Budget, BudgetAlert, Notification
from .spend import requests_grouped, rollup_marks, spend_by_org, spend_grouped

log = logging.getLogger("bonito.billing.budgets")


def period_bounds(budget: Budget, now: datetime) -> tuple[datetime, datetime]:
    now = now.astimezone(UTC)
    if budget.period == Budget.Period.DAILY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    return month_bounds(now)


def budget_spent(budget: Budget, now: datetime) -> Decimal:
    """What the budget's org, team or key has spent so far this period (a row dated past
    its end, an agent's clock running ahead, is the next period's)."""
    start, end = period_bounds(budget, now)
    narrowed = budget.narrowed_by
    spent = spend_by_org(start, end, org_id=budget.org_id, **dict([narrowed] if narrowed else []))
    return spent.get(budget.org_id, Decimal(0))


def budget_spends(
    budgets, now: datetime, org_ids=None, *, marks=None, known=None
) -> dict[int, Decimal]:
    """budget id -> what its org, team or key has spent this period (budgets of the given
    orgs, or of any): one spend query per period start and scope, not one per budget.
    ``marks``: billing.spend.rollup_marks(), read once for all of them; ``known``:
    {(period start, period end, scope): spend_grouped's answer} the caller has already (the
    month's spend by org is every monthly org budget's)."""
    spends: dict[tuple, dict] = dict(known or {})
    out = {}
    for budget in budgets:
        start, end = period_bounds(budget, now)
        if (start, end, budget.scope) not in spends:
            if marks is None:
                marks = rollup_marks()
            spends[(start, end, budget.scope)] = spend_grouped(
                start, end, by=budget.scope, org_ids=org_ids, marks=marks
            )
        narrowed = budget.narrowed_by
        group = (budget.org_id,) + ((narrowed[1],) if narrowed else ())
        out[budget.id] = spends[(start, end, budget.scope)].get(group, Decimal(0))
    return out


def budget_target(budget: Budget) -> str:
    if budget.scope == Budget.Scope.TEAM:
        return f"team {budget.team.name}"
    if budget.scope == Budget.Scope.KEY:
        return f"key {budget.key.name} ({budget.key.masked})"
    return budget.org.name


def budget_blocks(
    now: datetime, org_ids=None, *, marks=None, known=None
) -> dict[int, dict[str, Block]]:
    """org id -> {"org" | "team:<id>" | "key:<id>": Block} for hard budgets that are spent
    (of the given orgs, or all). One spend query per period and scope, not one per budget
    (``marks`` and ``known``: as budget_spends)."""
    budgets = Budget.objects.filter(is_active=True, hard=True).select_related("org", "team", "key")
    if org_ids is not None:
        budgets = budgets.filter(org_id__in=list(org_ids))
    budgets = list(budgets)
    spent_of = budget_spends(budgets, now, org_ids, marks=marks, known=known)
    blocked: dict[int, dict[str, Block]] = {}
    for budget in budgets:
        _start, end = period_bounds(budget, now)
        spent = spent_of[budget.id]
        if spent < budget.amount_usd:
            continue
        narrowed = budget.narrowed_by
        scope = f"{budget.scope}:{narrowed[1]}" if narrowed else "org"
        # A key's budget refuses only that key's requests: "this key", not its name and
        # masked secret, which a rename or rotation changes without rebuilding the blocks.
        target = "this key" if budget.scope == Budget.Scope.KEY else budget_target(budget)
        blocked.setdefault(budget.org_id, {})[scope] = Block(
            reason=f"The {budget.get_period_display().lower()} budget of ${budget.amount_usd:,.2f} for {target} "
            f"is spent (${spent:,.2f}). Requests are refused until {end:%Y-%m-%d %H:%M} UTC or until an admin "
            "raises the budget.",
            until=end.timestamp(),
        )
    return blocked


@transaction.atomic
def budget_check(*, budget: Budget, now: datetime) -> list[BudgetAlert]:
    """Fire each threshold the budget has reached this period, once."""
    start, _end = period_bounds(budget, now)
    spent = budget_spent(budget, now)
    percent = spent * 100 / budget.amount_usd if budget.amount_usd else Decimal(100)
    fired = []
    for level in budget.levels:
        if percent < level:
            continue
        alert, created = BudgetAlert.objects.get_or_create(
            budget=budget, period_start=start, threshold=level, defaults={"spent_usd": spent}
        )
        if not created:
            continue
        fired.append(alert)
        # One notice per threshold crossed, each saying which (several can be crossed at
        # once: "156%" three times told nothing).
        message = (
            f"{budget_target(budget)} passed {level}% of its {budget.get_period_display().lower()} "
            f"budget of ${budget.amount_usd:,.2f} (spent ${spent:,.2f}, {percent:.0f}%)"
            + (": requests are now refused." if budget.hard and level >= 100 else ".")
        )
        Notification.objects.create(
            org=budget.org, message=message[:500], level="error" if level >= 100 else "warning"
        )
        audit_record(
            actor=Actor(via="budgets"),
            org=budget.org,
            action="budget.alert",
            target=budget,
            after={"threshold": level, "spent_usd": str(spent)},
        )
        if budget.hard and level >= 100:
            # every worker starts refusing within the snapshot's poll time
            config_version_bump(ORG_ONLY, org_id=budget.org_id)
        # The alert is committed once and never fires again: a broker down now (a Redis
        # restart) must delay its delivery, not lose it (core.tasks.enqueue).
        transaction.on_commit(
            lambda alert_id=alert.id, text=message: enqueue(budget_alert_task, alert_id, text)
        )
    return fired


# Hard budgets watched by the usage writer (hard_budgets_reached): when the config version
# moves (every budget save, pause or delete bumps it) those of the orgs it names are read
# again, all of them at least this often (a safety net), and each is checked at most this
# often per process.
HARD_BUDGETS_RELOAD_S = 10.0
HARD_BUDGET_CHECK_EVERY_S = 1.0
_watch: dict = {"at": -1e9, "stamp": None, "by_org": {}, "checked": {}, "bumped": set()}


def _watched_budgets(clock: float) -> dict:
    """org id -> its active hard budgets, as of the current config version: one small query
    for the version per batch; when it moved, the budgets of the orgs the change log names
    are read again (every org's after a change that names none, a gap in the log, a reset
    counter, and every HARD_BUDGETS_RELOAD_S). A budget raised, lowered, paused or added
    counts from the next batch on, never from a stale copy (a raised budget checked against
    its old amount never blocked again until the reload). Reading only the changed orgs'
    keeps a config change cheap for every worker's usage writer, however many orgs have a
    hard budget (with 100 of them: 3.6-6.3 ms of CPU a change, holding the GIL, when every
    org's were read; 1.7-2.1 ms by the changed org, three queries)."""
    stamp, old = current_stamp(), _watch["stamp"]
    if stamp != old or clock - _watch["at"] > HARD_BUDGETS_RELOAD_S:
        query = Budget.objects.filter(is_active=True, hard=True).select_related(
            "org", "team", "key"
        )
        changes = None
        if old is not None and old[0] < stamp[0] and clock - _watch["at"] <= HARD_BUDGETS_RELOAD_S:
            changes = changes_since(old[0], stamp[0])
        if changes is not None and all(org_id is not None for _, org_id, _ in changes):
            orgs = {org_id for _, org_id, _ in changes}
            by_org = {o: bs for o, bs in _watch["by_org"].items() if o not in orgs}
            query, at = query.filter(org_id__in=orgs), _watch["at"]
        else:
            by_org, at = {}, clock
        for b in query:
            by_org.setdefault(b.org_id, []).append(b)
        # What this process counted for a budget it watched meanwhile holds; one it did not
        # watch (paused, new) starts from a spend query, not from what it knew before.
        watched = {b.id for budgets in _watch["by_org"].values() for b in budgets}
        kept = {b.id for budgets in by_org.values() for b in budgets} & watched
        checked = {i: c for i, c in _watch["checked"].items() if i in kept}
        # The stamp was read first: a save committed after it moves the version again.
        _watch.update(at=at, stamp=stamp, by_org=by_org, checked=checked)
    return _watch["by_org"]


def _budget_now(budget: Budget) -> Budget | None:
    """The budget as stored now (one query), or None when it no longer blocks anything
    (paused, made soft, deleted): what decides, not the copy read at the batch's start."""
    return (
        Budget.objects.filter(pk=budget.pk, is_active=True, hard=True)
        .select_related("org", "team", "key")
        .first()
    )


def hard_budgets_reached(records: list[dict]) -> None:
    """After a batch of usage rows is stored: the active hard budgets those rows spend from
    are checked now, so a spent one blocks within the gateways' poll time instead of at the
    next minute's check (and its alerts fire then too). A budget newly spent makes one
    config change for its org, so every worker reads the org's blocks again."""
    spending = [r for r in records if r.get("cost")]
    if not spending:
        return
    clock = time.monotonic()
    by_org = _watched_budgets(clock)
    now = timezone.now()
    for org_id in {r["org_id"] for r in spending} & by_org.keys():
        for budget in by_org[org_id]:
            field, wanted = budget.narrowed_by or (None, None)
            cost = sum(
                Decimal(str(r["cost"]))
                for r in spending
                if r["org_id"] == org_id and (field is None or r.get(field) == wanted)
            )
            if not cost:
                continue
            # What this process knows: the spend read at its last check plus what it has
            # stored since. Checked at once when that reaches the amount, else at most
            # once a second (other processes' rows count only from their own checks).
            checked_at, known, since = _watch["checked"].get(budget.id, (-1e9, Decimal(0), 0))
            since += cost
            if known + since < budget.amount_usd and clock - checked_at < HARD_BUDGET_CHECK_EVERY_S:
                _watch["checked"][budget.id] = (checked_at, known, since)
                continue
            spent = budget_spent(budget, now)
            _watch["checked"][budget.id] = (clock, spent, Decimal(0))
            if spent < budget.amount_usd:
                continue
            # Spent by the copy: decide on the budget as stored now (saved meanwhile?).
            current = _budget_now(budget)
            if current is None or spent < current.amount_usd:
                continue
            # The amount is in the mark: a budget raised and spent again blocks again.
            mark = (current.id, period_bounds(current, now)[0], current.amount_usd)
            if mark not in _watch["bumped"]:
                fired = budget_check(budget=current, now=now)
                # budget_check bumps the config when it fires the 100% alert; a budget
                # raised and spent again this period has that alert already.
                if not any(alert.threshold >= 100 for alert in fired):
                    config_version_bump(ORG_ONLY, org_id=current.org_id)
                _watch["bumped"].add(mark)


def budgets_check_all(*, now: datetime) -> int:
    fired = 0
    for budget in Budget.objects.filter(is_active=True).select_related("org", "team", "key"):
        fired += len(budget_check(budget=budget, now=now))
    return fired


# The Celery task keeps the name it was first queued under (billing.tasks), so messages
# already in the broker at an upgrade still find it.
@shared_task(
    name="billing.tasks.budget_alert_deliver",
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=8,
)
def budget_alert_task(alert_id: int, text: str):
    budget_alert_deliver(alert_id=alert_id, text=text)


def budget_alert_deliver(*, alert_id: int, text: str) -> None:
    """Email the org's admins and post the optional Slack-compatible webhook.

    The two channels are independent: one failing does not hold back the other, and each is
    recorded once delivered, so the task's retries (it retries while a channel fails) never
    send the same alert twice on a channel that already got it."""
    alert = BudgetAlert.objects.select_related("budget__org", "budget__team", "budget__key").get(
        pk=alert_id
    )
    failures = []
    for channel, sent_field, deliver in (
        ("email", "email_sent_at", _alert_email),
        ("webhook", "webhook_sent_at", _alert_webhook),
    ):
        if getattr(alert, sent_field) is not None:
            continue
        try:
            delivered = deliver(alert, text)
        except Exception as exc:  # the other channel still goes out; the task retries this one
            log.warning("budget alert %s: %s delivery failed: %r", alert_id, channel, exc)
            failures.append(exc)
            continue
        if delivered:
            BudgetAlert.objects.filter(pk=alert_id).update(**{sent_field: timezone.now()})
    if failures:
        raise failures[0]


def email_org_admins(org, subject: str, text: str) -> bool:
    """Email an org's admins (False when it has none). Also used by agent outage alerts."""
    admins = list(
        Membership.objects.for_org(org)
        .filter(role=Role.ADMIN)
        .values_list("user__email", flat=True)
    )
    if not admins:
        return False
    # Names are checked when set, but older ones may hold a line break: a header cannot.
    send_mail(
        subject=one_line(subject), message=text + "\n", from_email=None, recipient_list=admins
    )
    return True


def post_webhook(url: str, text: str, icon: str = ":warning:") -> bool:
    """Post a Slack-compatible message (False when no URL is set)."""
    if not url:
        return False
    from gateway.dataplane.egress import guarded_client
    from gateway.runtime import network_policy

    # Checked again here, at the connection: DNS may have changed since it was saved.
    with guarded_client(network_policy(), timeout=10) as client:
        client.post(url, json={"text": f"{icon} Bonito: {text}"}).raise_for_status()
    return True


def _alert_email(alert: BudgetAlert, text: str) -> bool:
    budget = alert.budget
    subject = f"Bonito budget alert: {alert.threshold}% for {budget_target(budget)}"
    return email_org_admins(budget.org, subject, text)


def _alert_webhook(alert: BudgetAlert, text: str) -> bool:
    return post_webhook(alert.budget.webhook_url, text)


def _budget_summary(budget: Budget) -> dict:
    return {
        "scope": budget.scope,
        "target": budget_target(budget),
        "period": budget.period,
        "amount_usd": str(budget.amount_usd),
        "hard": budget.hard,
        "thresholds": budget.levels,
        "webhook": "set" if budget.webhook_url else "none",  # the URL carries its secret
        "is_active": budget.is_active,
    }


@transaction.atomic
def budget_save(
    *,
    actor: Actor,
    org,
    amount_usd,
    scope: str = "org",
    team=None,
    key=None,
    period: str = "monthly",
    hard: bool = False,
    thresholds=None,
    webhook_url: str = "",
    is_active: bool = True,
    budget: Budget | None = None,
) -> Budget:
    """Create a budget, or update ``budget``. Hard budgets reach the gateways with the
    config version, so raising one lifts its block within seconds."""
    if team is not None and team.org_id != org.id or key is not None and key.org_id != org.id:
        raise ValidationError("That team or key belongs to another organization.")
    webhook_url = (webhook_url or "").strip()
    if webhook_url:
        from gateway.services import url_check

        url_check(webhook_url, "webhook_url")
    if budget is not None and budget.org_id != org.id:
        raise ValidationError("A budget stays with its organization.")
    if scope == Budget.Scope.TEAM and team is None or scope == Budget.Scope.KEY and key is None:
        raise ValidationError({scope: f"Choose the {scope} this budget is for."})
    team = team if scope == Budget.Scope.TEAM else None
    key = key if scope == Budget.Scope.KEY else None
    before = _budget_summary(budget) if budget is not None else None
    budget = budget or Budget(org=org)
    budget.scope, budget.team, budget.key, budget.period = scope, team, key, period
    # Exactly as written (10.1 is 10.10), never negative.
    budget.amount_usd = money(amount_usd, Budget._meta.get_field("amount_usd"))
    if budget.amount_usd is None:
        raise ValidationError({"amount_usd": "An amount in USD is required."})
    budget.hard, budget.webhook_url, budget.is_active = hard, webhook_url or "", is_active
    if thresholds is not None and (
        not isinstance(thresholds, list | tuple)
        or not all(
            isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 1000 for t in thresholds
        )
    ):
        # The Django admin's JSON box also takes a number, NaN or an object.
        raise ValidationError(
            {
                "thresholds": "thresholds: a list of whole percentages from 1 to 1000, e.g. [50, 100]."
            }
        )
    budget.thresholds = sorted(set(thresholds or [50, 80, 100]))
    budget.full_clean()
    budget.save()
    # Raising a hard budget lifts its block: the gateways see it with the config version.
    record_config_change(
        actor=actor,
        org=org,
        entity="budget",
        target=budget,
        before=before,
        after=_budget_summary(budget),
    )
    return budget


@transaction.atomic
def budget_delete(*, actor: Actor, budget: Budget) -> None:
    # A deleted hard budget stops blocking.
    record_config_delete(
        actor=actor, org=budget.org, entity="budget", target=budget, before=_budget_summary(budget)
    )


def tier_blocks(
    now: datetime, org_ids=None, marks: tuple | None = None
) -> dict[int, dict[str, Block]]:
    """org id -> {"org": Block} for orgs past their tier's monthly request allowance: the
    tiers with an allowance, the orgs on them, their month's requests (billing.spend: from
    rollups and the raw rows since, never a scan of the month's raw rows), and the names of
    the orgs that are past it."""
    from orgs.models import Organization, TierLimit

    limits = {t.tier: t for t in TierLimit.objects.exclude(monthly_requests=None)}
    if not limits:
        return {}
    start, end = month_bounds(now)
    orgs = Organization.objects.filter(tier__in=limits)
    if org_ids is not None:
        orgs = orgs.filter(id__in=list(org_ids))
    counts = requests_grouped(start, org_ids=orgs.values("id"), marks=marks)
    counts = {org_id: n for (org_id,), n in counts.items() if n > 0}
    blocked = {}
    for org_id, tier, name in orgs.filter(id__in=list(counts)).values_list("id", "tier", "name"):
        limit = limits[tier]
        if counts[org_id] >= limit.monthly_requests:
            blocked[org_id] = {
                "org": Block(
                    reason=f"The {limit.get_tier_display()} tier includes {limit.monthly_requests:,} requests a month and "
                    f"{name} has used them. Upgrade the plan, or wait until {end:%Y-%m-%d} UTC.",
                    until=end.timestamp(),
                )
            }
    return blocked


def org_facts(now: datetime, org_ids=None) -> dict[int, dict]:
    """What billing tells the gateway's snapshot about each org (gateway.snapshot_builder
    ORG_FACTS): the month's spend so far, and the budgets and tier allowances that are spent;
    of the given orgs (a config change reloads one), or all. The rollups' watermark is read
    once, and the month's spend by org serves the monthly org budgets too: for one org,
    a handful of queries."""
    facts: dict[int, dict] = {}
    marks = rollup_marks()
    month, month_end = month_bounds(now)
    # The floor under the gateway's spend-cap counter (the data plane counts in floats).
    totals = spend_grouped(month, month_end, org_ids=org_ids, marks=marks)
    for (org_id,), total in totals.items():
        facts.setdefault(org_id, {})["spent_this_month"] = float(total)
    blocked = budget_blocks(now, org_ids, marks=marks, known={(month, month_end, "org"): totals})
    for org_id, scopes in tier_blocks(now, org_ids, marks=marks).items():
        blocked.setdefault(org_id, {}).update(scopes)
    for org_id, scopes in blocked.items():
        facts.setdefault(org_id, {})["blocked"] = scopes
    return facts
