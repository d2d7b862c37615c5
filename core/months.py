"""Calendar months in UTC: where monthly spend caps, tier allowances, monthly budgets and
statements begin and end. Pure (no Django): the data plane uses it too."""

from datetime import UTC, datetime


def month_bounds(moment: datetime | None = None) -> tuple[datetime, datetime]:
    """[the first instant of ``moment``'s UTC month, the first instant of the next)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def month_key(moment: datetime | None = None) -> str:
    """'202611': the month as it names per-month counters."""
    return f"{month_bounds(moment)[0]:%Y%m}"
