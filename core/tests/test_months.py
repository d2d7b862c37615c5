from datetime import UTC, datetime

from core import months


def _at(monkeypatch, moment: datetime) -> None:
    monkeypatch.setattr(months.time, "time", lambda: moment.timestamp())


def test_the_current_month_key_follows_the_clock_across_month_and_year_ends(monkeypatch):
    _at(monkeypatch, datetime(2026, 11, 30, 23, 59, 59, 999_000, tzinfo=UTC))
    assert months.month_key() == "202611"
    _at(monkeypatch, datetime(2026, 12, 1, tzinfo=UTC))
    assert months.month_key() == "202612"
    _at(monkeypatch, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert months.month_key() == "202612"
    _at(monkeypatch, datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
    assert months.month_key() == "202701"
    _at(monkeypatch, datetime(2026, 10, 15, tzinfo=UTC))  # a clock set back
    assert months.month_key() == "202610"


def test_a_given_moment_names_its_own_month_whatever_the_clock():
    assert months.month_key(datetime(2024, 2, 29, 23, 0, tzinfo=UTC)) == "202402"
    assert months.month_bounds(datetime(2024, 12, 31, 23, 0, tzinfo=UTC)) == (
        datetime(2024, 12, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_a_spend_reservation_keeps_the_month_it_was_made_in(monkeypatch):
    from gateway.dataplane.limits import SpendReservation

    _at(monkeypatch, datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    spend = SpendReservation(org_id=7, cap=10.0, reserve=1.0, baseline=0.0)
    _at(monkeypatch, datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))
    assert spend.key.endswith(":cap:202611")  # its settlement goes where it was reserved
    assert SpendReservation(7, 10.0, 1.0, 0.0).key.endswith(":cap:202612")
