"""The Models page: the catalog searched by name or provider, paginated, with the org's
deployments serving each model at the price in use; another org's deployments never."""

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from gateway import services
from gateway.catalog import model_catalog_sync
from gateway.models import ModelCatalogEntry
from gateway.pricing import litellm_price_map
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(db):
    if not ModelCatalogEntry.objects.filter(name="gpt-4o-mini").exists():
        model_catalog_sync()
    return ModelCatalogEntry.objects


@pytest.fixture
def served(org_a, org_b, alice, charlie, catalog):
    """Acme serves gpt-4o-mini twice (catalog price, custom price); Globex serves gpt-4o."""
    openai = services.provider_save(actor=ACTOR, org=org_a, name="openai", kind="mock")
    azure = services.provider_save(actor=ACTOR, org=org_a, name="azure", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="fast", provider=openai, upstream_model="gpt-4o-mini"
    )
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="fast-eu",
        provider=azure,
        upstream_model="gpt-4o-mini",
        input_price_per_mtok=Decimal("0.5"),
        output_price_per_mtok=Decimal("1.25"),
    )
    globex = services.provider_save(actor=ACTOR, org=org_b, name="globex-secret", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=org_b, model_name="big", provider=globex, upstream_model="gpt-4o"
    )


def _page(client, org, query=""):
    return client.get(reverse("catalog", args=[org.slug]) + query)


def _names(response):
    return [e.name for e in response.context["page"].object_list]


def test_search_matches_the_name_or_the_provider(vera_client, org_a, catalog):
    by_name = _names(_page(vera_client, org_a, "?search=GPT-4O-MINI"))
    assert by_name and all("gpt-4o-mini" in n.lower() for n in by_name)
    by_provider = _page(vera_client, org_a, "?search=anthropic").context["page"].object_list
    assert by_provider and all(
        "anthropic" in e.name.lower() or "anthropic" in e.provider for e in by_provider
    )
    exact = _page(vera_client, org_a, "?provider=openai").context["page"].object_list
    assert exact and {e.provider for e in exact} == {"openai"}


def test_prices_and_context_windows_come_from_the_catalog(vera_client, org_a, catalog):
    entry = litellm_price_map()["gpt-4o-mini"]
    response = _page(vera_client, org_a, "?search=gpt-4o-mini&provider=openai")
    row = next(e for e in response.context["page"].object_list if e.name == "gpt-4o-mini")
    assert row.input_mtok == pytest.approx(entry["input_cost_per_token"] * 1e6)
    assert row.max_input_tokens == entry["max_input_tokens"]
    html = response.content.decode()
    assert f"${entry['input_cost_per_token'] * 1e6:g}" in html


def test_it_shows_the_orgs_deployments_with_the_price_in_use(alice_client, org_a, served):
    response = _page(alice_client, org_a, "?served=1")
    assert _names(response) == ["gpt-4o-mini"]  # gpt-4o is Globex's, not Acme's
    row = response.context["page"].object_list[0]
    by_name = {d.model_name: d for d in row.deployments}
    assert set(by_name) == {"fast", "fast-eu"}
    mini = litellm_price_map()["gpt-4o-mini"]
    assert by_name["fast"].price_in_mtok == pytest.approx(mini["input_cost_per_token"] * 1e6)
    assert not by_name["fast"].custom_price
    assert by_name["fast-eu"].price_in_mtok == pytest.approx(0.5)
    assert by_name["fast-eu"].price_out_mtok == pytest.approx(1.25)
    assert by_name["fast-eu"].custom_price
    html = response.content.decode()
    assert "custom price" in html and "catalog price" in html


def test_another_orgs_deployments_never_show(alice_client, charlie_client, org_a, org_b, served):
    html = _page(alice_client, org_a, "?search=gpt-4o").content.decode()
    assert "globex-secret" not in html and ">big<" not in html
    assert _names(_page(charlie_client, org_b, "?served=1")) == ["gpt-4o"]
    assert _page(charlie_client, org_a).status_code == 404


def test_it_is_paginated_with_the_search_kept(vera_client, org_a, catalog):
    first = _page(vera_client, org_a, "?search=gpt")
    page = first.context["page"]
    assert len(page.object_list) == 50 and page.has_next()
    assert re.search(r'href="\?search=gpt&page=2"', first.content.decode())
    second = _page(vera_client, org_a, "?search=gpt&page=2")
    assert set(_names(first)).isdisjoint(_names(second))
    assert _page(vera_client, org_a, "?search=gpt&page=99999").status_code == 200


@pytest.mark.parametrize(
    "query", ["?search=%00", "?search=" + "x" * 5000, "?page=abc", "?provider=%00", "?served=2"]
)
def test_odd_input_is_a_page_never_a_500(vera_client, org_a, catalog, query):
    assert _page(vera_client, org_a, query).status_code == 200


def test_the_page_costs_the_same_queries_with_more_deployments(alice_client, org_a, served):
    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert _page(alice_client, org_a, "?search=gpt-4o-mini").status_code == 200
        _last[:] = [q["sql"][:150] for q in ctx.captured_queries]
        return len(ctx)

    _last: list = []

    few = count()
    extra = services.provider_save(actor=ACTOR, org=org_a, name="extra", kind="mock")
    for name in ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "azure/gpt-4o-mini"):
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=f"x-{name}", provider=extra, upstream_model=name
        )
    first = list(_last)
    assert count() == few, "\n".join(q for q in _last if q not in first)


def test_the_rest_catalog_reads_the_same_selector(alice_client, org_a, served):
    body = alice_client.get("/api/gateway/models?served=1").json()
    rows = body["results"] if isinstance(body, dict) else body
    assert [r["name"] for r in rows] == ["gpt-4o-mini"]
