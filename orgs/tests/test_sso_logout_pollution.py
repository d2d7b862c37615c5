"""A signed logout link cannot carry a second, unsigned message: the signature is checked
over the raw query parts the message is decoded from, and a SAML parameter sent twice or
spelt another way (percent-encoded, another case, padded) is refused (query-parameter
pollution: Django and python3-saml would read different values)."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
import base64
import zlib
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote_plus, urlparse

import pytest
from django.test import Client
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C

from orgs.models import AuditLog, SSOSession

from .test_sso import (  # noqa: F401
    _no_acs_limit,
    _valid,
    acme_sso,
    idp,
    other_idp,
    post,
    refused_as,
    start,
)

pytestmark = pytest.mark.django_db
SLS = "/sso/acme/sls/"
SLS_URL = "http://testserver/sso/acme/sls/"


def sign_in(idp, email) -> Client:
    client = Client()
    xml = idp.signed_response(**_valid(idp, start(client), name_id=email))
    assert post(client, xml).status_code == 302
    return client


def user_of(client) -> str | None:
    response = client.get("/o/acme/")
    return None if response.status_code == 302 else client.session["sso"]["name_id"]


def unsigned_for(idp, name_id) -> str:
    """A deflated, base64, URL-encoded LogoutRequest nobody signed."""
    return quote_plus(idp.logout_request(sls_url=SLS_URL, name_id=name_id))


@pytest.fixture
def victim(acme_sso, idp):
    return sign_in(idp, "dana@acme.test")


@pytest.fixture
def mallorys_own_logout(idp):
    """A logout link the IdP signed, for the attacker's own account."""
    return idp.signed_logout_request(sls_url=SLS_URL, name_id="mallory@acme.test")


def assert_refused(response, victim, words):
    assert response.status_code == 400, response.status_code
    assert words.encode() in response.content, response.content[:1500]
    row = AuditLog.objects.filter(action="sso.refused").latest("id")
    assert words in row.changes["after"]["reason"]
    assert user_of(victim) == "dana@acme.test"
    assert SSOSession.objects.filter(name_id="dana@acme.test").count() == 1
    assert not AuditLog.objects.filter(action="sso.logout").exists()


@pytest.mark.parametrize(
    "name",
    [
        "%53AMLRequest",  # Django decodes the name: request.GET["SAMLRequest"] was this one
        "SAMLRequest%00",
        "SAMLREQUEST",
        "samlrequest",
        "SamlRequest",
        "SAMLRequest%20",
        "SAMLRequest+",
        "+SAMLRequest",
        "SAML+Request",
        "SAML%2BRequest",
    ],
)
def test_a_second_spelling_of_samlrequest_is_refused(victim, idp, mallorys_own_logout, name):
    polluted = f"{mallorys_own_logout}&{name}={unsigned_for(idp, 'dana@acme.test')}"
    response = Client().get(f"{SLS}?{polluted}")
    assert_refused(response, victim, "spells the SAML parameter SAMLRequest another way")


def test_samlrequest_twice_is_refused(victim, idp, mallorys_own_logout):
    for polluted in (
        f"{mallorys_own_logout}&SAMLRequest={unsigned_for(idp, 'dana@acme.test')}",
        f"SAMLRequest={unsigned_for(idp, 'dana@acme.test')}&{mallorys_own_logout}",
    ):
        response = Client().get(f"{SLS}?{polluted}")
        assert_refused(response, victim, "carries SAMLRequest more than once")


@pytest.mark.parametrize(
    "extra,words",
    [
        (f"SigAlg={quote_plus(C.RSA_SHA1)}", "carries SigAlg more than once"),
        ("Signature=AAAA", "carries Signature more than once"),
        ("RelayState=/x&RelayState=/y", "carries RelayState more than once"),
        ("%53igAlg=x", "spells the SAML parameter SigAlg another way"),
        ("signature=AAAA", "spells the SAML parameter Signature another way"),
        ("Relay%53tate=/x", "spells the SAML parameter RelayState another way"),
    ],
)
def test_a_repeated_or_respelt_signature_parameter_is_refused(
    victim, mallorys_own_logout, extra, words
):
    response = Client().get(f"{SLS}?{mallorys_own_logout}&{extra}")
    assert_refused(response, victim, words)


def test_a_request_and_a_response_in_one_query_are_refused(victim, idp, mallorys_own_logout):
    polluted = f"{mallorys_own_logout}&SAMLResponse={unsigned_for(idp, 'dana@acme.test')}"
    response = Client().get(f"{SLS}?{polluted}")
    assert_refused(response, victim, "both a SAMLRequest and a SAMLResponse")


def test_an_unknown_or_missing_sigalg_is_refused(victim, idp):
    query = idp.signed_logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    without = "&".join(p for p in query.split("&") if not p.startswith("SigAlg="))
    assert_refused(Client().get(f"{SLS}?{without}"), victim, "no SigAlg this site accepts")
    other = query.replace(quote_plus(C.RSA_SHA256), quote_plus("urn:none"))
    assert_refused(Client().get(f"{SLS}?{other}"), victim, "no SigAlg this site accepts")


def test_the_signature_covers_the_relay_state_read(victim, idp):
    xml = idp.logout_request_xml(sls_url=SLS_URL, name_id="dana@acme.test")
    query = idp.redirect_query("SAMLRequest", xml, relay_state="/signed")
    forged = query.replace("RelayState=%2Fsigned", "RelayState=%2Fforged")
    response = Client().get(f"{SLS}?{forged}")
    assert_refused(response, victim, "Signature validation failed")
    response = Client().get(f"{SLS}?{query}")  # as signed: acted on
    assert response.status_code == 302 and user_of(victim) is None
    answer = parse_qs(urlparse(response["Location"]).query)
    assert answer["RelayState"] == ["/signed"]


def test_posted_logout_messages_with_a_parameter_twice_are_refused(victim, idp):
    signed = idp.posted_logout_request(sls_url=SLS_URL, name_id="mallory@acme.test")
    forged = base64.b64encode(
        idp.logout_request_xml(sls_url=SLS_URL, name_id="dana@acme.test").encode()
    ).decode()
    response = Client().post(SLS, {"SAMLRequest": [signed, forged]})
    assert_refused(response, victim, "carries SAMLRequest more than once")


def test_a_polluted_logout_response_is_refused(victim, idp):
    location = victim.post(SLS)["Location"]  # the user's own logout: a LogoutRequest to the IdP
    request_xml = zlib.decompress(
        base64.b64decode(parse_qs(urlparse(location).query)["SAMLRequest"][0]), -15
    ).decode()
    request_id = request_xml.split(' ID="', 1)[1].split('"', 1)[0]

    def logout_response(status):
        return (
            '<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r9" Version="2.0" '
            f'IssueInstant="{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}" Destination="{SLS_URL}" '
            f'InResponseTo="{request_id}"><saml:Issuer>{idp.entity_id}</saml:Issuer>'
            f'<samlp:Status><samlp:StatusCode Value="{status}"/>'
            "</samlp:Status></samlp:LogoutResponse>"
        )

    signed = idp.redirect_query("SAMLResponse", logout_response(C.STATUS_SUCCESS))
    unsigned = quote_plus(
        base64.b64encode(zlib.compress(logout_response(C.STATUS_RESPONDER).encode())[2:-4]).decode()
    )
    for polluted in (f"{signed}&%53AMLResponse={unsigned}", f"{signed}&SAMLResponse={unsigned}"):
        response = victim.get(f"{SLS}?{polluted}")
        assert response.status_code == 400
        assert b"SAMLResponse" in response.content
    reasons = [r.changes["after"]["reason"] for r in AuditLog.objects.filter(action="sso.refused")]
    assert any("another way" in r for r in reasons) and any("more than once" in r for r in reasons)
    response = victim.get(f"{SLS}?{signed}")  # the clean answer is still accepted
    assert response.status_code == 302 and response["Location"] == "/login/"


def test_the_clean_signed_link_still_works(victim, idp):
    query = idp.signed_logout_request(sls_url=SLS_URL, name_id="dana@acme.test")
    response = Client().get(f"{SLS}?{query}&utm_source=mail")  # other parameters are fine
    assert response.status_code == 302 and user_of(victim) is None


def test_a_sign_in_response_posted_twice_in_one_form_is_refused(acme_sso, idp):
    client = Client()
    xml = idp.signed_response(**_valid(idp, start(client)))
    encoded = base64.b64encode(xml.encode()).decode()
    response = client.post("/sso/acme/acs/", {"SAMLResponse": [encoded, encoded]})
    assert refused_as(response, "more than once")
    assert client.session.get("_auth_user_id") is None
