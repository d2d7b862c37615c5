"""Single logout: only IdP-signed logout messages are acted on, and a LogoutRequest ends
only the sessions of the user (and SessionIndex) it names."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
import base64
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.test import Client

from orgs import sso
from orgs.audit import Actor
from orgs.models import AuditLog, SSOSession

from .saml_idp import TestIdP
from .test_sso import SP, _no_acs_limit, _valid, acme_sso, idp, other_idp, post, start  # noqa: F401

pytestmark = pytest.mark.django_db
SLS = "/sso/acme/sls/"
SLS_URL = "http://testserver/sso/acme/sls/"


def sign_in(idp, email="dana@acme.test") -> Client:
    client = Client()
    xml = idp.signed_response(**_valid(idp, start(client), name_id=email))
    assert post(client, xml).status_code == 302
    return client


def user_of(client) -> str | None:
    response = client.get("/o/acme/")
    return None if response.status_code == 302 else client.session["sso"]["name_id"]


def answer(response) -> tuple[str, str]:
    """(where the LogoutResponse goes, its status) from a Redirect-binding answer."""
    location = response["Location"]
    query = parse_qs(urlparse(location).query)
    xml = zlib.decompress(base64.b64decode(query["SAMLResponse"][0]), -15).decode()
    status = xml.split('StatusCode Value="', 1)[1].split('"', 1)[0]
    return location.split("?", 1)[0], status.rsplit(":", 1)[-1]


def test_a_signed_logout_request_ends_the_named_users_session(acme_sso, idp):
    client = sign_in(idp)
    index = client.session["sso"]["session_index"]
    query = idp.signed_logout_request(
        sls_url=SLS_URL, name_id="dana@acme.test", session_index=index
    )
    response = client.get(f"{SLS}?{query}")
    assert response.status_code == 302
    assert answer(response) == (idp.slo_url, "Success")
    assert user_of(client) is None
    assert not SSOSession.objects.exists()
    row = AuditLog.objects.get(action="sso.logout")
    assert row.changes["after"] == {"by": "idp", "name_id": "dana@acme.test", "sessions_ended": 1}


def test_a_logout_request_signed_in_its_xml_is_accepted_by_post(acme_sso, idp):
    client = sign_in(idp)
    encoded = idp.posted_logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    response = client.post(SLS, {"SAMLRequest": encoded})  # no CSRF token: the IdP's POST
    assert response.status_code == 302 and answer(response)[1] == "Success"
    assert user_of(client) is None


def test_an_unsigned_logout_request_is_refused_and_logs_nobody_out(acme_sso, idp):
    client = sign_in(idp)
    forged = idp.logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    for response in (
        client.get(SLS, {"SAMLRequest": forged}),
        client.post(SLS, {"SAMLRequest": base64.b64encode(
            idp.logout_request_xml(sls_url=SLS_URL, name_id="dana@acme.test").encode()
        ).decode()}),
    ):  # fmt: skip
        assert response.status_code == 400
        assert b"requires signed logout messages" in response.content
    assert user_of(client) == "dana@acme.test"
    assert SSOSession.objects.count() == 1
    assert AuditLog.objects.filter(action="sso.refused").count() == 2
    # An org whose IdP cannot sign them may turn the requirement off (docs/sso.md).
    sso.sso_config_save(actor=Actor(via="test"), org=acme_sso.org, require_signed_logout=False)
    forged = idp.logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    assert client.get(SLS, {"SAMLRequest": forged}).status_code == 302
    assert user_of(client) is None


def test_a_logout_request_signed_by_another_key_or_tampered_is_refused(acme_sso, idp, other_idp):
    client = sign_in(idp)
    impostor = TestIdP(entity_id=idp.entity_id, name="impostor")
    query = impostor.signed_logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    response = client.get(f"{SLS}?{query}")
    assert response.status_code == 400 and b"Signature validation failed" in response.content
    query = idp.signed_logout_request(sls_url=SLS_URL, name_id="eve@acme.test")
    tampered = query.replace("SAMLRequest=", "SAMLRequest=" + "", 1)
    params = parse_qs(tampered)
    params["SAMLRequest"] = [idp.logout_request(sls_url=SLS_URL, name_id="dana@acme.test")]
    response = client.get(f"{SLS}?{urlencode(params, doseq=True)}")
    assert response.status_code == 400 and b"Signature validation failed" in response.content
    posted = impostor.posted_logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    response = client.post(SLS, {"SAMLRequest": posted})
    assert response.status_code == 400 and b"Signature validation failed" in response.content
    assert user_of(client) == "dana@acme.test"


def test_a_logout_request_for_another_user_leaves_this_session_alone(acme_sso, idp):
    victim = sign_in(idp, "dana@acme.test")
    query = idp.signed_logout_request(sls_url=SLS_URL, name_id="mallory@acme.test")
    response = victim.get(f"{SLS}?{query}")
    assert response.status_code == 302 and answer(response)[1] == "Requester"
    assert user_of(victim) == "dana@acme.test"
    row = AuditLog.objects.get(action="sso.refused")
    assert "names another user" in row.changes["after"]["reason"]
    # The right user but another sign-in (SessionIndex) is not this session either.
    query = idp.signed_logout_request(
        sls_url=SLS_URL, name_id="dana@acme.test", session_index="_s-some-other-session"
    )
    response = victim.get(f"{SLS}?{query}")
    assert answer(response)[1] == "Requester" and user_of(victim) == "dana@acme.test"


def test_an_idp_logout_ends_the_named_users_sessions_in_other_browsers(acme_sso, idp):
    laptop, phone = sign_in(idp), sign_in(idp)
    bystander = sign_in(idp, "erin@acme.test")
    query = idp.signed_logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    response = Client().get(f"{SLS}?{query}")  # a browser with no Bonito session
    assert answer(response)[1] == "Success"
    assert user_of(laptop) is None and user_of(phone) is None
    assert user_of(bystander) == "erin@acme.test"
    assert AuditLog.objects.get(action="sso.logout").changes["after"]["sessions_ended"] == 2


def test_a_logout_request_is_acted_on_once_and_only_while_fresh(acme_sso, idp):
    client = sign_in(idp)
    query = idp.signed_logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    assert client.get(f"{SLS}?{query}").status_code == 302
    client = sign_in(idp)
    response = client.get(f"{SLS}?{query}")
    assert response.status_code == 400 and b"already used (a replay)" in response.content
    old = idp.signed_logout_request(
        sls_url=SLS_URL,
        name_id="dana@acme.test",
        issue_instant=datetime.now(UTC) - timedelta(hours=1),
    )
    response = client.get(f"{SLS}?{old}")
    assert response.status_code == 400 and b"too old" in response.content
    assert user_of(client) == "dana@acme.test"


def test_the_users_log_out_asks_the_idp_and_accepts_only_its_signed_answer(acme_sso, idp):
    client = sign_in(idp)
    response = client.post(SLS)  # the Log out button
    assert response["Location"].startswith(idp.slo_url) and user_of(client) is None
    request_xml = zlib.decompress(
        base64.b64decode(parse_qs(urlparse(response["Location"]).query)["SAMLRequest"][0]), -15
    ).decode()
    request_id = request_xml.split(' ID="', 1)[1].split('"', 1)[0]

    def logout_response(in_response_to):
        return (
            '<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r1" Version="2.0" '
            f'IssueInstant="{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}" Destination="{SLS_URL}" '
            f'InResponseTo="{in_response_to}"><saml:Issuer>{idp.entity_id}</saml:Issuer>'
            '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>'
            "</samlp:Status></samlp:LogoutResponse>"
        )

    unsigned = base64.b64encode(zlib.compress(logout_response(request_id).encode())[2:-4]).decode()
    response = client.get(SLS, {"SAMLResponse": unsigned})
    assert response.status_code == 400 and b"not signed" in response.content
    signed = idp.redirect_query("SAMLResponse", logout_response("_not-ours"))
    assert client.get(f"{SLS}?{signed}").status_code == 400
    client.post(SLS)  # nobody signed in: no new LogoutRequest, nothing awaited
    signed = idp.redirect_query("SAMLResponse", logout_response(request_id))
    response = client.get(f"{SLS}?{signed}")
    assert (
        response.status_code == 400 and b"answers no logout this site started" in response.content
    )


def test_a_signed_answer_to_our_logout_request_returns_to_the_sign_in_page(acme_sso, idp):
    client = sign_in(idp)
    location = client.post(SLS)["Location"]
    request_xml = zlib.decompress(
        base64.b64decode(parse_qs(urlparse(location).query)["SAMLRequest"][0]), -15
    ).decode()
    request_id = request_xml.split(' ID="', 1)[1].split('"', 1)[0]
    xml = (
        '<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r2" Version="2.0" '
        f'IssueInstant="{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}" Destination="{SLS_URL}" '
        f'InResponseTo="{request_id}"><saml:Issuer>{idp.entity_id}</saml:Issuer>'
        '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>'
        "</samlp:Status></samlp:LogoutResponse>"
    )
    response = client.get(f"{SLS}?{idp.redirect_query('SAMLResponse', xml)}")
    assert response.status_code == 302 and response["Location"] == "/login/"
    posted = base64.b64encode(idp.sign(xml).encode()).decode()  # POST binding: answered once
    assert client.post(SLS, {"SAMLResponse": posted}).status_code == 400


def test_admins_see_and_set_the_signed_logout_rule_on_the_settings_page(alice_client, idp, org_a):
    form = {
        "preset": "okta",
        "metadata_xml": idp.metadata(),
        "email_domains": "acme.test",
        "session_hours": 8,
        "enabled": "on",
    }
    assert alice_client.post("/o/acme/settings/sso/", form).status_code == 302
    config = sso.SSOConfig.objects.get(org=org_a)
    assert config.require_signed_logout  # on unless turned off
    page = alice_client.get("/o/acme/settings/sso/").content.decode()
    assert 'name="require_signed_logout"' in page and "IdP-signed logout messages" in page
    form["require_signed_logout"] = "no"
    assert alice_client.post("/o/acme/settings/sso/", form).status_code == 302
    config.refresh_from_db()
    assert not config.require_signed_logout
    row = AuditLog.objects.filter(action="sso.config_update").last()
    assert row.changes["after"]["require_signed_logout"] is False


def test_the_log_out_button_is_still_csrf_checked(acme_sso, idp):
    client = sign_in(idp)
    client.handler.enforce_csrf_checks = True
    assert client.post(SLS).status_code == 403  # no token: a cross-site form cannot log out
    assert user_of(client) == "dana@acme.test"
    page = client.get("/o/acme/").content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    assert client.post(SLS, {"csrfmiddlewaretoken": token}).status_code == 302
    assert user_of(client) is None


def test_an_sso_session_ends_session_hours_after_sign_in_however_much_it_is_used(acme_sso, idp):
    """session_hours is the session's life from the sign-in, not from its last use: every
    dashboard page writes the session (the org last opened), and a lifetime counted from
    the last write would let a busy session outlive its SSOSession row, and so the IdP's
    logout, for ever."""
    from django.contrib.sessions.models import Session

    client = sign_in(idp)
    record = SSOSession.objects.get()
    ends = Session.objects.get(session_key=record.session_key).expire_date
    assert abs(ends - record.expires_at) < timedelta(seconds=5)
    for _ in range(3):
        assert client.get("/o/acme/keys/").status_code == 200
        assert client.get("/o/acme/").status_code == 200
    assert Session.objects.get(session_key=record.session_key).expire_date == ends
    cookie_ends = parsedate_to_datetime(client.cookies["sessionid"]["expires"])
    assert abs(cookie_ends - ends) < timedelta(seconds=2)  # the browser drops it then too
