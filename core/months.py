"""Calendar months in UTC: where monthly spend caps, tier allowances, monthly budgets and
statements begin and end. Pure (no Django): the data plane uses it too."""

import time
from datetime import UTC, datetime


def month_bounds(moment: datetime | None = None) -> tuple[datetime, datetime]:
    """[the first instant of ``moment``'s UTC month, the first instant of the next)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


# The current month's [start, end) in epoch seconds and its key: every /v1 request with a
# spend cap names its counter by the month, and building it from datetimes each time was
# ~5 % of a worker's request path.
_current: tuple[float, float, str] = (0.0, 0.0, "")


def month_key(moment: datetime | None = None) -> str:
    """'202611': the month as it names per-month counters (``moment``'s, or now's)."""
    global _current
    if moment is not None:
        return f"{month_bounds(moment)[0]:%Y%m}"
    now = time.time()
    start, end, key = _current
    if not start <= now < end:
        first, after = month_bounds(datetime.fromtimestamp(now, UTC))
        _current = start, end, key = first.timestamp(), after.timestamp(), f"{first:%Y%m}"
    return key
