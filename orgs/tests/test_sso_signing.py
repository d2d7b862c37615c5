"""Each org's SP has its own key pair: it signs AuthnRequests and logout messages, is
published (with the previous one during a rotation) in metadata that does not expire,
and is kept encrypted at rest. An org may accept a signature over the whole response
instead of the assertion; wrapped responses are refused whatever it accepts."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
import base64
import re
from datetime import timedelta
from urllib.parse import unquote, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.test import Client
from django.utils import timezone

from core.crypto import decrypt_json
from orgs import sso
from orgs.audit import Actor
from orgs.models import AuditLog, SSOConfig

from .test_sso import (  # noqa: F401
    SP,
    _no_acs_limit,
    _valid,
    acme_sso,
    idp,
    other_idp,
    post,
    refused_as,
    signed_in_as,
    start,
)

pytestmark = pytest.mark.django_db
ADMIN = Actor(via="test")


def cert_body(pem: str) -> str:
    return "".join(line for line in pem.strip().splitlines() if "CERTIFICATE" not in line)


def verify_redirect_signature(location: str, cert_pem: str, kind: str) -> None:
    """The Redirect binding's signature: over the raw `kind=..&RelayState=..&SigAlg=..`."""
    query = urlparse(location).query
    parts = dict(p.split("=", 1) for p in query.split("&"))
    assert unquote(parts["SigAlg"]) == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    signed = "&".join(f"{k}={parts[k]}" for k in (kind, "RelayState", "SigAlg") if k in parts)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.public_key().verify(  # raises if it does not verify
        base64.b64decode(unquote(parts["Signature"])),
        signed.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


# ------------------------------------------------------------------------------ key pair
def test_each_org_gets_its_own_sp_key_encrypted_at_rest(acme_sso):
    Client().get("/sso/acme/metadata/")  # first use
    config = SSOConfig.objects.get(pk=acme_sso.pk)
    assert "BEGIN CERTIFICATE" in config.sp_certificate
    assert "PRIVATE KEY" not in config.sp_private_key  # a Fernet token
    key_pem = decrypt_json(config.sp_private_key)["private_key"]
    assert key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(config.sp_certificate.encode())
    assert cert.public_key().key_size == 3072
    assert cert.not_valid_after_utc - timezone.now() > timedelta(days=3000)
    row = AuditLog.objects.get(action="sso.sp_key_create")
    assert "PRIVATE" not in str(row.changes) and "BEGIN" not in str(row.changes)
    Client().get("/sso/acme/metadata/")
    assert SSOConfig.objects.get(pk=acme_sso.pk).sp_certificate == config.sp_certificate


def test_sp_metadata_publishes_the_certificate_and_does_not_expire(acme_sso):
    xml = Client().get("/sso/acme/metadata/").content.decode()
    config = SSOConfig.objects.get(pk=acme_sso.pk)
    assert "validUntil" not in xml
    assert 'cacheDuration="PT24H"' in xml
    assert 'AuthnRequestsSigned="true"' in xml and 'WantAssertionsSigned="true"' in xml
    for use in ("signing", "encryption"):
        block = re.search(rf'<md:KeyDescriptor use="{use}">(.*?)</md:KeyDescriptor>', xml, re.S)
        assert block and cert_body(config.sp_certificate) in block.group(1).replace("\n", "")


def test_authn_requests_are_signed_with_the_orgs_key(acme_sso):
    location = Client().get("/sso/acme/login/")["Location"]
    assert "Signature=" in location
    verify_redirect_signature(location, SSOConfig.objects.get(pk=acme_sso.pk).sp_certificate,
                              "SAMLRequest")  # fmt: skip


def test_logout_requests_and_responses_are_signed(acme_sso, idp):
    client = Client()
    assert post(client, idp.signed_response(**_valid(idp, start(client)))).status_code == 302
    cert = SSOConfig.objects.get(pk=acme_sso.pk).sp_certificate
    verify_redirect_signature(client.post("/sso/acme/sls/")["Location"], cert, "SAMLRequest")
    query = idp.signed_logout_request(
        sls_url="http://testserver/sso/acme/sls/", name_id="dana@acme.test"
    )
    answer = Client().get(f"/sso/acme/sls/?{query}")["Location"]
    verify_redirect_signature(answer, cert, "SAMLResponse")


def test_admins_rotate_the_sp_key_and_the_old_certificate_stays_published_for_a_while(
    acme_sso, alice_client, bob_client, idp, settings
):
    old = sso.sp_keys(acme_sso)[1]
    page = alice_client.get("/o/acme/settings/sso/").content.decode()
    assert 'value="rotate_sp_key"' in page and 'id="sp-cert-sha256"' in page
    assert bob_client.post("/o/acme/settings/sso/", {"action": "rotate_sp_key"}).status_code == 403
    assert SSOConfig.objects.get(pk=acme_sso.pk).sp_certificate == old
    response = alice_client.post("/o/acme/settings/sso/", {"action": "rotate_sp_key"})
    assert response.status_code == 302
    config = SSOConfig.objects.get(pk=acme_sso.pk)
    assert config.sp_certificate != old and config.sp_previous_certificate == old
    assert config.sp_previous_until - timezone.now() > timedelta(days=29)
    row = AuditLog.objects.get(action="sso.sp_key_rotate")
    assert row.actor_label == "alice@acme.test" and "BEGIN" not in str(row.changes)
    assert row.changes["before"]["sp_cert_sha256"] != row.changes["after"]["sp_cert_sha256"]
    xml = Client().get("/sso/acme/metadata/").content.decode().replace("\n", "")
    assert cert_body(old) in xml and cert_body(config.sp_certificate) in xml
    assert xml.count('use="signing"') == 2 and xml.count('use="encryption"') == 2
    location = Client().get("/sso/acme/login/")["Location"]
    verify_redirect_signature(location, config.sp_certificate, "SAMLRequest")  # the new key
    assert 'id="sp-previous-sha256"' in alice_client.get("/o/acme/settings/sso/").content.decode()
    # After the grace period the old certificate is no longer published.
    SSOConfig.objects.filter(pk=acme_sso.pk).update(
        sp_previous_until=timezone.now() - timedelta(minutes=1)
    )
    xml = Client().get("/sso/acme/metadata/").content.decode().replace("\n", "")
    assert cert_body(old) not in xml and xml.count('use="signing"') == 1


def test_outsiders_cannot_rotate_another_orgs_key(acme_sso, charlie):
    client = Client()
    client.force_login(charlie)
    old = sso.sp_keys(acme_sso)[1]
    assert client.post("/o/acme/settings/sso/", {"action": "rotate_sp_key"}).status_code == 404
    assert SSOConfig.objects.get(pk=acme_sso.pk).sp_certificate == old


# ------------------------------------------------------------------------------ signature scope
def test_a_response_signed_only_as_a_whole_needs_the_orgs_consent(acme_sso, idp, alice_client):
    client = Client()
    xml = idp.response_signed_only(**_valid(idp, start(client)))
    response = post(client, xml)
    assert refused_as(response, "The Assertion of the Response is not signed")
    for scope in ("response", "either"):
        sso.sso_config_save(actor=ADMIN, org=acme_sso.org, signature_scope=scope)
        client = Client()
        response = post(client, idp.response_signed_only(**_valid(idp, start(client))))
        assert response.status_code == 302 and signed_in_as(client) == "dana@acme.test"
    # "either" also takes a signed assertion; "response" does not do without its signature.
    client = Client()
    assert post(client, idp.signed_response(**_valid(idp, start(client)))).status_code == 302
    sso.sso_config_save(actor=ADMIN, org=acme_sso.org, signature_scope="response")
    client = Client()
    response = post(client, idp.signed_response(**_valid(idp, start(client))))
    assert response.status_code == 403
    assert 'WantAssertionsSigned="false"' in Client().get("/sso/acme/metadata/").content.decode()
    page = alice_client.get("/o/acme/settings/sso/").content.decode()
    assert 'name="signature_scope"' in page


def _forged(idp, rid):
    return idp.assertion(
        **_valid(idp, rid, name_id="mallory@acme.test", attributes={"groups": ["Bonito Admins"]})
    )


def added_assertion(idp, rid):
    # A forged assertion slipped into a response signed as a whole, beside the real one.
    xml = idp.response_signed_only(**_valid(idp, rid))
    return xml.replace("</samlp:Response>", _forged(idp, rid) + "</samlp:Response>")


def swapped_assertion(idp, rid):
    # The signed response's assertion replaced after signing.
    xml = idp.response_signed_only(**_valid(idp, rid))
    start_, end = xml.index("<saml:Assertion"), xml.index("</saml:Assertion>") + 17
    return xml[:start_] + _forged(idp, rid) + xml[end:]


def wrapped_response(idp, rid):
    # XSW: the genuine signed response hidden in Extensions of an unsigned outer one.
    inner = idp.response_signed_only(**_valid(idp, rid))
    return idp.response(
        _forged(idp, rid),
        acs_url=SP["acs_url"],
        in_response_to=rid,
        issuer=idp.entity_id,
        extensions=f"<samlp:Extensions>{inner}</samlp:Extensions>",
    )


def signature_references_another_element(idp, rid):
    # The assertion's own signature moved up to the response: it names the assertion's
    # ID, not the response's, and the assertion it covered is replaced by a forgery.
    signed = idp.sign(idp.assertion(**_valid(idp, rid), assertion_id="_genuine"))
    signature = re.search(r"<ds:Signature.*</ds:Signature>", signed, re.S).group(0)
    response = idp.response(
        _forged(idp, rid), acs_url=SP["acs_url"], in_response_to=rid, issuer=idp.entity_id
    )
    issuer_end = response.index("</saml:Issuer>") + len("</saml:Issuer>")
    return response[:issuer_end] + signature + response[issuer_end:]


def unsigned_beside_signed(idp, rid):
    a = idp.sign(idp.assertion(**_valid(idp, rid)))
    return idp.response(
        a + _forged(idp, rid), acs_url=SP["acs_url"], in_response_to=rid, issuer=idp.entity_id
    )


def unsigned_everything(idp, rid):
    return idp.response(
        _forged(idp, rid), acs_url=SP["acs_url"], in_response_to=rid, issuer=idp.entity_id
    )


@pytest.mark.parametrize("scope", ["assertion", "response", "either"])
@pytest.mark.parametrize(
    "build",
    [
        added_assertion,
        swapped_assertion,
        wrapped_response,
        signature_references_another_element,
        unsigned_beside_signed,
        unsigned_everything,
    ],
)
def test_wrapped_or_unsigned_responses_are_refused_whatever_the_scope(acme_sso, idp, scope, build):
    sso.sso_config_save(actor=ADMIN, org=acme_sso.org, signature_scope=scope)
    client = Client()
    response = post(client, build(idp, start(client)))
    assert response.status_code == 403, response.content.decode()[:3000]
    assert signed_in_as(client) is None
    assert not sso.User.objects.filter(email="mallory@acme.test").exists()
    assert AuditLog.objects.filter(action="sso.refused").count() == 1
