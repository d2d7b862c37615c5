"""{% load money %}: the dashboard's and the digest's money and shares (core.money).

{{ a.totals.cost_usd|usd }}              $0.0009, $0.000016, $0
{{ sr.saved_pct|pct }}                   95%, 19.44%
{{ sr.saved_pct|pct:sr.saved_usd }}      under 0.01% when the saving is not zero
{{ a.totals.error_rate|rate_pct:a.totals.errors }}
"""

from django import template

from core import money

register = template.Library()


@register.filter
def usd(value) -> str:
    return money.usd(value)


@register.filter
def pct(value, nonzero=False) -> str:
    return money.pct(value, bool(nonzero))


@register.filter
def rate_pct(value, nonzero=False) -> str:
    return money.rate_pct(value, bool(nonzero))
