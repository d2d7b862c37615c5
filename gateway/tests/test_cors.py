"""Browser access (CORS): an org opts in per origin; a preflight (no key) is answered from
the Origin alone, the actual response carries Access-Control-Allow-Origin only when the
key's org allows the origin. The setting: one service, from the dashboard, REST and
apply_config, to the data plane by snapshot and delta, and to agents in their document."""

import httpx
import pytest
from django.core.exceptions import ValidationError

from gateway import services
from gateway.dataplane.snapshot import org_from_dict, org_to_dict
from gateway.dataplane.state import SnapshotSource
from gateway.models import GatewayConfig
from gateway.snapshot_builder import SnapshotRefresher
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from orgs.models import AuditLog

CHAT = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
APP = "https://app.acme.example"


@pytest.mark.parametrize(
    "given,stored",
    [
        (["https://app.example.com"], ["https://app.example.com"]),
        (["HTTPS://App.Example.COM"], ["https://app.example.com"]),
        (["https://app.example.com:443"], ["https://app.example.com"]),
        (["http://localhost:80"], ["http://localhost"]),
        (["http://localhost:3000", " http://localhost:3000 "], ["http://localhost:3000"]),
        (["http://127.0.0.1:8080"], ["http://127.0.0.1:8080"]),
        (["http://[::1]:5173"], ["http://[::1]:5173"]),
        (["https://a.example", "https://b.example"], ["https://a.example", "https://b.example"]),
        (["*"], ["*"]),
        ([], []),
    ],
)
def test_it_stores_origins_as_browsers_send_them(org_a, given, stored):
    config = services.gateway_config_set(actor=ACTOR, org=org_a, cors_origins=given)
    assert GatewayConfig.objects.get(pk=config.pk).cors_origins == stored


@pytest.mark.parametrize(
    "bad",
    [
        ["https://app.example.com/"],  # a trailing slash: a URL, not an origin
        ["https://app.example.com/path"],
        ["app.example.com"],  # no scheme
        ["ftp://app.example.com"],
        ["https://*.example.com"],  # no wildcards but * alone
        ["*.example.com"],
        ["https://user:pw@app.example.com"],
        ["https://app.example.com?x=1"],
        ["https://app.example.com#x"],
        ["https://app.example.com:99999"],
        ["https://app.example.com:0"],
        ["https://app_example.com"],
        ["https://-app.example.com"],
        ["null"],
        ["https://app.example.com\n"],
        ["https://app.example.com\x00"],
        ["https://app.example.com,https://b.example"],
        ["*", "https://app.example.com"],  # * is every origin: alone
        [""],
        [42],
        "https://app.example.com",  # not a list
        [f"https://{'a' * 64}.example.com"],  # a label of 64
        [f"https://a{i}.example.com" for i in range(51)],
    ],
)
def test_it_refuses_what_is_not_an_origin_and_stores_nothing(org_a, bad):
    with pytest.raises(ValidationError) as err:
        services.gateway_config_set(actor=ACTOR, org=org_a, cors_origins=bad)
    assert "cors_origins" in str(err.value)
    assert not GatewayConfig.objects.filter(org=org_a).exclude(cors_origins=[]).exists()


def test_a_change_is_audited_and_reaches_a_running_data_plane_by_delta(org_a, org_b):
    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    refresher.refresh_once()  # the first, full build
    first = source.current
    assert first.orgs[org_a.id].cors_origins == frozenset()
    services.gateway_config_set(actor=ACTOR, org=org_a, cors_origins=[APP])
    refresher.refresh_once()  # the change log's delta
    assert source.current is not first
    assert source.current.orgs[org_a.id].cors_origins == frozenset({APP})
    assert source.current.orgs[org_b.id].cors_origins == frozenset()
    row = AuditLog.objects.filter(org=org_a).latest("id")
    assert APP in str(row.changes)


def test_the_agents_document_carries_the_origins(org_a):
    services.gateway_config_set(actor=ACTOR, org=org_a, cors_origins=[APP, "http://localhost:3000"])
    refresh_snapshot()
    from gateway import runtime

    org = runtime.snapshots().current.orgs[org_a.id]
    as_json = org_to_dict(org)
    assert as_json["cors_origins"] == sorted([APP, "http://localhost:3000"])
    assert org_from_dict(as_json).cors_origins == org.cors_origins


def test_rest_reads_and_writes_the_origins(alice_client, vera_client, charlie_client, org_a):
    url = "/api/gateway/config"
    ok = alice_client.put(
        url, {"cors_origins": ["HTTPS://APP.acme.example:443"]}, content_type="application/json"
    )
    assert ok.status_code == 200 and ok.json()["cors_origins"] == [APP]
    assert vera_client.get(url).json()["cors_origins"] == [APP]
    denied = vera_client.put(url, {"cors_origins": ["*"]}, content_type="application/json")
    assert denied.status_code == 403
    bad = alice_client.put(url, {"cors_origins": ["https://*.x"]}, content_type="application/json")
    assert bad.status_code == 400 and "cors_origins" in bad.json()
    assert charlie_client.get(url).json()["cors_origins"] == []  # his own org's, not Alice's
    assert GatewayConfig.objects.get(org=org_a).cors_origins == [APP]


def test_apply_config_sets_and_exports_the_origins(org_a):
    from gateway.config import org_config_apply, org_config_export
    from orgs.config import ConfigError

    org_config_apply(actor=ACTOR, org=org_a, data={"gateway": {"cors_origins": [APP]}})
    assert org_config_export(org_a)["orgs"][0]["gateway"]["cors_origins"] == [APP]
    with pytest.raises((ConfigError, ValidationError)):
        org_config_apply(actor=ACTOR, org=org_a, data={"gateway": {"cors_origins": ["x/"]}})
    with pytest.raises(ConfigError):
        org_config_apply(actor=ACTOR, org=org_a, data={"gateway": {"cors_origins": APP}})
    assert GatewayConfig.objects.get(org=org_a).cors_origins == [APP]


def test_the_dashboard_page(alice_client, bob_client, charlie_client, org_a):
    url = f"/o/{org_a.slug}/settings/cors/"
    assert alice_client.get(url).status_code == 200
    saved = alice_client.post(url, {"cors_origins": f"{APP}, http://localhost:3000"})
    assert saved.status_code == 302
    assert GatewayConfig.objects.get(org=org_a).cors_origins == [APP, "http://localhost:3000"]
    page = alice_client.get(url).content.decode()
    assert f"<code>{APP}</code>" in page
    refused = alice_client.post(url, {"cors_origins": "https://*.example.com"}, follow=True)
    assert "not an origin" in refused.content.decode()
    assert GatewayConfig.objects.get(org=org_a).cors_origins == [APP, "http://localhost:3000"]
    assert bob_client.post(url, {"cors_origins": "*"}).status_code == 403  # a member reads only
    assert bob_client.get(url).status_code == 200
    assert charlie_client.get(url).status_code == 404
    assert charlie_client.post(url, {"cors_origins": "*"}).status_code == 404
    assert GatewayConfig.objects.get(org=org_a).cors_origins == [APP, "http://localhost:3000"]
    assert alice_client.post(url, {"cors_origins": ""}).status_code == 302
    assert GatewayConfig.objects.get(org=org_a).cors_origins == []


# ---------------------------------------------------------------- on the wire (real HTTP)
@pytest.fixture
def cors(acme, org_b):
    services.gateway_config_set(actor=ACTOR, org=acme.org, cors_origins=[APP])
    # Another org allows another origin: preflights from it pass, Acme's keys get nothing.
    services.gateway_config_set(actor=ACTOR, org=org_b, cors_origins=["https://other.example"])
    refresh_snapshot()
    return acme


def _preflight(url, origin, headers="authorization, content-type"):
    return httpx.options(
        url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
        timeout=30,
    )


def test_a_preflight_from_an_allowed_origin_is_answered(cors):
    response = _preflight(cors.url, APP, "authorization, content-type, x-stainless-os")
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == APP
    # DELETE: /v1/responses/{id}
    assert response.headers["access-control-allow-methods"] == "GET, POST, DELETE"
    allowed = response.headers["access-control-allow-headers"].split(", ")
    assert {"authorization", "content-type", "x-stainless-os"} <= set(allowed)
    assert "access-control-allow-credentials" not in response.headers
    assert "Origin" in response.headers["vary"]
    assert usage_rows() == []  # a preflight has no key: no row


@pytest.mark.parametrize(
    "sent",
    [APP.upper(), APP.replace("https://", "HTTPS://"), APP.title(), "https://APP.acme.Example"],
)
def test_an_origin_in_any_case_is_echoed_in_lower_case_as_stored(cors, sent):
    assert sent != APP and sent.lower() == APP
    response = _preflight(cors.url, sent)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == APP
    for answer in (_chat(cors, sent), _chat(cors, sent, key="bn-wrong")):
        assert answer.headers["access-control-allow-origin"] == APP


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "https://app.acme.example.evil", "http://app.acme.example", "null"],
)
def test_a_preflight_from_an_origin_no_org_allows_is_refused(cors, origin):
    response = _preflight(cors.url, origin)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert response.json()["error"]["code"] == "origin_not_allowed"


def _chat(acme, origin, key=None):
    return httpx.post(
        acme.base_url + "/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key or acme.raw}", "Origin": origin},
        timeout=30,
    )


def test_the_response_allows_the_origin_the_keys_org_allows(cors):
    response = _chat(cors, APP)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP
    exposed = response.headers["access-control-expose-headers"]
    assert "x-request-id" in exposed and "x-ratelimit-remaining-requests" in exposed
    assert "access-control-allow-credentials" not in response.headers
    assert "Origin" in response.headers["vary"]


def test_another_orgs_origin_gets_nothing_with_this_orgs_key(cors):
    assert _preflight(cors.url, "https://other.example").status_code == 204  # org B allows it
    response = _chat(cors, "https://other.example")
    assert response.status_code == 200  # answered (a server can call without CORS) ...
    assert "access-control-allow-origin" not in response.headers  # ... a browser reads nothing


def test_errors_carry_the_header_too_so_the_app_can_read_them(cors):
    refused = _chat(cors, APP, key="bn-wrong")  # no valid key: any org's allowing decides
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP
    not_found = httpx.post(
        cors.base_url + "/nope", headers={"Authorization": f"Bearer {cors.raw}", "Origin": APP}
    )
    assert not_found.status_code == 404
    assert not_found.headers["access-control-allow-origin"] == APP
    evil = _chat(cors, "https://evil.example", key="bn-wrong")
    assert "access-control-allow-origin" not in evil.headers


def test_streams_carry_the_header(cors):
    with httpx.stream(
        "POST",
        cors.base_url + "/chat/completions",
        json={**CHAT, "stream": True},
        headers={"Authorization": f"Bearer {cors.raw}", "Origin": APP},
        timeout=30,
    ) as response:
        assert response.headers["access-control-allow-origin"] == APP
        assert b"".join(response.iter_bytes()).endswith(b"data: [DONE]\n\n")


def test_with_no_org_opting_in_no_origin_is_allowed(acme):
    assert _preflight(acme.url, APP).status_code == 403
    assert "access-control-allow-origin" not in _chat(acme, APP).headers


def test_star_allows_any_origin_for_that_orgs_keys_only(acme, org_b):
    services.gateway_config_set(actor=ACTOR, org=acme.org, cors_origins=["*"])
    refresh_snapshot()
    for origin in ("https://anything.example", "http://localhost:5173"):
        assert _preflight(acme.url, origin).headers["access-control-allow-origin"] == origin
        assert _chat(acme, origin).headers["access-control-allow-origin"] == origin
