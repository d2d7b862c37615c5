"""Interoperability with an independent SAML implementation: pysaml2's IdP
(saml2.server.Server, which signs, verifies and encrypts through Debian's xmlsec1
binary) against Bonito's SP endpoints, with the keys and metadata each side publishes."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
import base64
import html
import re
import shutil
import zlib
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client
from saml2 import BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.response import IncorrectlySigned, StatusError
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server
from saml2.sigver import RSA_OAEP_MGF1P, make_temp, pre_encryption_part
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from orgs import sso
from orgs.audit import Actor
from orgs.models import AuditLog, SSOConfig, User

from .saml_idp import _keypair
from .test_sso import _no_acs_limit, refused_as, verify_domains  # noqa: F401

pytestmark = pytest.mark.django_db
ADMIN = Actor(via="test")
BASE = "http://testserver/sso/acme"
SP_ENTITY, ACS, SLS = f"{BASE}/metadata/", f"{BASE}/acs/", f"{BASE}/sls/"
IDP_ENTITY = "https://idp.pysaml2.test/metadata"
IDP_SLO = "https://idp.pysaml2.test/slo"
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
AES128_GCM = "http://www.w3.org/2009/xmlenc11#aes128-gcm"
SESSION_KEYS = {AES256_CBC: "aes-256", AES128_GCM: "aes-128"}
IDP_KEYPAIR = _keypair("pysaml2-idp")


@pytest.fixture(scope="module")
def xmlsec1() -> str:
    path = shutil.which("xmlsec1") or shutil.which("xmlsec1", path="/usr/bin")
    if path is None:
        pytest.fail(
            "pysaml2's xmlsec1 binary is missing: apt-get install -y xmlsec1 (.ci/run does it)",
            pytrace=False,
        )
    return path


class InteropIdP(Server):
    """pysaml2's IdP, encrypting assertions with the algorithms Entra ID and Okta use
    (pysaml2 itself defaults to 3DES): AES-CBC or AES-GCM content, RSA-OAEP key transport,
    to the encryption certificate in the SP's metadata."""

    content_algorithm = AES256_CBC

    def _encrypt_assertion(self, encrypt_cert, sp_entity_id, response, node_xpath=None):
        (_name, cert), *_ = self.metadata.certs(sp_entity_id, "any", "encryption")
        body = "".join(line for line in cert.splitlines() if "CERTIFICATE" not in line)
        pem = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
        tmp = make_temp(pem.encode(), decode=False, delete_tmpfiles=True)
        template = pre_encryption_part(
            msg_enc=self.content_algorithm, key_enc=RSA_OAEP_MGF1P, encrypt_cert=body
        )
        return self.sec.encrypt_assertion(
            response,
            tmp.name,
            template,
            key_type=SESSION_KEYS[self.content_algorithm],
            node_xpath=node_xpath,
        )


def _idp_config(tmp_path, xmlsec1, sp_metadata: str | None) -> IdPConfig:
    key, cert = IDP_KEYPAIR
    (tmp_path / "idp.key").write_text(key)
    (tmp_path / "idp.crt").write_text(cert)
    metadata = {}
    if sp_metadata:
        (tmp_path / "sp.xml").write_text(sp_metadata)
        metadata = {"local": [str(tmp_path / "sp.xml")]}
    config = IdPConfig()
    config.load(
        {
            "entityid": IDP_ENTITY,
            "xmlsec_binary": xmlsec1,
            "key_file": str(tmp_path / "idp.key"),
            "cert_file": str(tmp_path / "idp.crt"),
            "metadata": metadata,
            "allow_unknown_attributes": True,
            "delete_tmpfiles": True,
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            ("https://idp.pysaml2.test/sso", BINDING_HTTP_REDIRECT)
                        ],
                        "single_logout_service": [(IDP_SLO, BINDING_HTTP_REDIRECT)],
                    },
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                    "want_authn_requests_signed": True,  # verify Bonito's signatures
                    "policy": {"default": {"lifetime": {"minutes": 15}}},
                }
            },
        }
    )
    return config


@pytest.fixture
def pysaml2_idp(tmp_path, xmlsec1, org_a, alice):
    """Bonito configured from pysaml2's IdP metadata, and the IdP from Bonito's SP
    metadata (fetched from the SP's metadata URL)."""
    idp_metadata = str(entity_descriptor(_idp_config(tmp_path, xmlsec1, None)))
    sso.sso_config_save(
        actor=ADMIN,
        org=org_a,
        preset="okta",
        email_domains=["acme.test"],
        group_roles={"Engineering": "member"},
        **sso.metadata_fields(idp_metadata),
    )
    verify_domains(org_a, "acme.test")
    sp_metadata = Client().get("/sso/acme/metadata/").content.decode()
    return InteropIdP(config=_idp_config(tmp_path, xmlsec1, sp_metadata))


def _query(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}


def begin(client, idp) -> str:
    """SP-initiated sign-in; pysaml2 verifies the AuthnRequest's signature (it must:
    want_authn_requests_signed) against the certificate in Bonito's metadata."""
    query = _query(client.get("/sso/acme/login/")["Location"])
    request = idp.parse_authn_request(
        query["SAMLRequest"],
        BINDING_HTTP_REDIRECT,
        relay_state=query.get("RelayState"),
        sigalg=query["SigAlg"],
        signature=query["Signature"],
    )
    assert request.message.assertion_consumer_service_url == ACS
    return request.message.id


def respond(idp, request_id, email="dana@acme.test", **kwargs) -> str:
    response = idp.create_authn_response(
        identity={"email": [email], "name": ["Dana Scully"], "groups": ["Engineering"]},
        in_response_to=request_id,
        destination=ACS,
        sp_entity_id=SP_ENTITY,
        name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=email),
        authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"},
        sign_alg=SIG_RSA_SHA256,
        digest_alg=DIGEST_SHA256,
        **kwargs,
    )
    return base64.b64encode(str(response).encode()).decode()


def signed_in_as(client) -> str | None:
    uid = client.session.get("_auth_user_id")
    return User.objects.get(pk=uid).email if uid else None


def test_pysaml2_verifies_our_authn_request_signature_against_our_metadata(pysaml2_idp):
    client = Client()
    assert begin(client, pysaml2_idp).startswith("ONELOGIN_")
    query = _query(client.get("/sso/acme/login/")["Location"])
    with pytest.raises(IncorrectlySigned):  # a tampered request is caught
        pysaml2_idp.parse_authn_request(
            query["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state="/o/somewhere-else/",
            sigalg=query["SigAlg"],
            signature=query["Signature"],
        )


@pytest.mark.parametrize("algorithm", [AES256_CBC, AES128_GCM], ids=["aes256-cbc", "aes128-gcm"])
def test_a_signed_and_encrypted_assertion_signs_in(pysaml2_idp, algorithm):
    pysaml2_idp.content_algorithm = algorithm
    client = Client()
    encoded = respond(
        pysaml2_idp,
        begin(client, pysaml2_idp),
        sign_assertion=True,
        encrypt_assertion=True,
        encrypt_assertion_self_contained=True,
    )
    xml = base64.b64decode(encoded).decode()
    assert "EncryptedAssertion" in xml and "dana@acme.test" not in xml and algorithm in xml
    response = client.post("/sso/acme/acs/", {"SAMLResponse": encoded})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert signed_in_as(client) == "dana@acme.test"
    row = AuditLog.objects.get(action="sso.login")
    assert row.changes["after"]["role"] == "member"


def test_an_encrypted_assertion_to_the_previous_key_works_during_the_grace_period(pysaml2_idp):
    # The IdP still holds the old certificate (it has not re-read the metadata yet).
    sso.sp_key_rotate(actor=ADMIN, config=SSOConfig.objects.get(org__slug="acme"))
    client = Client()
    encoded = respond(pysaml2_idp, begin_unverified(client), sign_assertion=True,
                      encrypt_assertion=True)  # fmt: skip
    assert client.post("/sso/acme/acs/", {"SAMLResponse": encoded}).status_code == 302


def begin_unverified(client) -> str:
    """The request id only (after a rotation the IdP would check with the new cert)."""
    query = _query(client.get("/sso/acme/login/")["Location"])
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"]), -15).decode()
    return xml.split(' ID="', 1)[1].split('"', 1)[0]


def test_a_response_signed_only_as_a_whole_signs_in_only_when_the_org_allows_it(pysaml2_idp):
    client = Client()
    encoded = respond(pysaml2_idp, begin(client, pysaml2_idp), sign_response=True,
                      sign_assertion=False)  # fmt: skip
    response = client.post("/sso/acme/acs/", {"SAMLResponse": encoded})
    assert refused_as(response, "Assertion of the Response is not signed")
    sso.sso_config_save(actor=ADMIN, org=SSOConfig.objects.get().org, signature_scope="response")
    client = Client()
    encoded = respond(pysaml2_idp, begin(client, pysaml2_idp), sign_response=True,
                      sign_assertion=False)  # fmt: skip
    response = client.post("/sso/acme/acs/", {"SAMLResponse": encoded})
    assert response.status_code == 302 and signed_in_as(client) == "dana@acme.test"


def sign_in(idp) -> Client:
    client = Client()
    encoded = respond(idp, begin(client, idp), sign_assertion=True)
    assert client.post("/sso/acme/acs/", {"SAMLResponse": encoded}).status_code == 302
    return client


def idp_logout_request(idp, client, name_id="dana@acme.test", sign=True) -> str:
    """pysaml2's LogoutRequest for Bonito, HTTP-Redirect binding (query string signed)."""
    _id, request = idp.create_logout_request(
        destination=SLS,
        issuer_entity_id=SP_ENTITY,
        name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name_id),
        session_indexes=[client.session["sso"]["session_index"]],
        sign=False,
    )
    info = idp.apply_binding(
        BINDING_HTTP_REDIRECT, str(request), SLS, relay_state="", sign=sign, sigalg=SIG_RSA_SHA256
    )
    return dict(info["headers"])["Location"]


def test_a_logout_request_signed_in_its_xml_and_posted_ends_the_session(pysaml2_idp):
    client = sign_in(pysaml2_idp)
    _id, request = pysaml2_idp.create_logout_request(
        destination=SLS,
        issuer_entity_id=SP_ENTITY,
        name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text="dana@acme.test"),
        session_indexes=[client.session["sso"]["session_index"]],
        sign=True,
        sign_alg=SIG_RSA_SHA256,
        digest_alg=DIGEST_SHA256,
    )
    xml = str(request)
    assert "Signature" in xml
    encoded = base64.b64encode(xml.encode()).decode()
    response = client.post("/sso/acme/sls/", {"SAMLRequest": encoded})  # HTTP-POST binding
    assert response.status_code == 302, response.content.decode()[:3000]
    assert signed_in_as(client) is None
    tampered = base64.b64encode(xml.replace("dana@acme.test", "erin@acme.test").encode())
    response = sign_in(pysaml2_idp).post("/sso/acme/sls/", {"SAMLRequest": tampered.decode()})
    assert response.status_code == 400 and b"Signature validation failed" in response.content


def test_a_signed_logout_request_from_the_idp_ends_the_named_users_session(pysaml2_idp):
    client = sign_in(pysaml2_idp)
    response = client.get(idp_logout_request(pysaml2_idp, client))
    assert response.status_code == 302 and response["Location"].startswith(IDP_SLO)
    assert signed_in_as(client) is None
    answer = pysaml2_idp.parse_logout_request_response(
        _query(response["Location"])["SAMLResponse"], BINDING_HTTP_REDIRECT
    )
    assert answer.response.status.status_code.value.endswith(":Success")


def test_a_pysaml2_signed_logout_link_cannot_carry_a_second_message(pysaml2_idp):
    victim = sign_in(pysaml2_idp)
    link = idp_logout_request(pysaml2_idp, victim, name_id="erin@acme.test")  # signed
    unsigned = idp_logout_request(pysaml2_idp, victim, sign=False)  # for dana: nobody signed
    forged = next(p for p in urlparse(unsigned).query.split("&") if p.startswith("SAMLRequest="))
    response = Client().get(f"{link}&%53AMLRequest={forged.split('=', 1)[1]}")
    assert response.status_code == 400 and b"another way" in response.content
    assert signed_in_as(victim) == "dana@acme.test" and victim.get("/o/acme/").status_code == 200


def test_an_unsigned_logout_request_from_the_idp_is_refused(pysaml2_idp):
    client = sign_in(pysaml2_idp)
    response = client.get(idp_logout_request(pysaml2_idp, client, sign=False))
    assert response.status_code == 400 and b"not signed" in response.content
    assert signed_in_as(client) == "dana@acme.test"


def test_a_logout_request_naming_another_user_leaves_the_session_alone(pysaml2_idp):
    client = sign_in(pysaml2_idp)
    response = client.get(idp_logout_request(pysaml2_idp, client, name_id="erin@acme.test"))
    assert signed_in_as(client) == "dana@acme.test"
    with pytest.raises(StatusError, match="Requester"):  # pysaml2 reads a non-success answer
        pysaml2_idp.parse_logout_request_response(
            _query(response["Location"])["SAMLResponse"], BINDING_HTTP_REDIRECT
        )


def test_our_logout_request_is_signed_and_pysaml2_verifies_it(pysaml2_idp):
    client = sign_in(pysaml2_idp)
    index = client.session["sso"]["session_index"]
    query = _query(client.post("/sso/acme/sls/")["Location"])  # the Log out button
    assert signed_in_as(client) is None
    request = pysaml2_idp.parse_logout_request(
        query["SAMLRequest"],
        BINDING_HTTP_REDIRECT,
        relay_state=query.get("RelayState"),
        sigalg=query["SigAlg"],
        signature=query["Signature"],
    )
    assert request.message.name_id.text == "dana@acme.test"
    assert request.message.session_index[0].text == index
    with pytest.raises(IncorrectlySigned):  # a forged signature is caught by pysaml2
        pysaml2_idp.parse_logout_request(
            query["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=query.get("RelayState"),
            sigalg=query["SigAlg"],
            signature=base64.b64encode(b"\0" * 384).decode(),
        )
    # pysaml2's signed answer brings the browser back to the sign-in page.
    answer = pysaml2_idp.create_logout_response(
        request.message, bindings=[BINDING_HTTP_REDIRECT], sign=False
    )
    info = pysaml2_idp.apply_binding(
        BINDING_HTTP_REDIRECT, str(answer), SLS, relay_state=query.get("RelayState", ""),
        response=True, sign=True, sigalg=SIG_RSA_SHA256,
    )  # fmt: skip
    response = client.get(dict(info["headers"])["Location"])
    assert response.status_code == 302 and response["Location"] == "/login/"


def test_a_response_that_does_not_decrypt_gets_the_same_page_as_any_other_refusal(pysaml2_idp):
    # No oracle for the XML-Encryption CBC padding attack, no library detail on the page.
    client = Client()
    xml = base64.b64decode(
        respond(
            pysaml2_idp, begin(client, pysaml2_idp), sign_assertion=True, encrypt_assertion=True
        )  # fmt: skip
    ).decode()
    cipher = re.findall(r"CipherValue>([^<]+)<", xml)[-1]  # the assertion's, not the key's
    garbled = xml.replace(cipher, base64.b64encode(b"\0" * 64).decode())
    undecryptable = client.post(
        "/sso/acme/acs/", {"SAMLResponse": base64.b64encode(garbled.encode()).decode()}
    )
    assert refused_as(undecryptable, "failed to decrypt")
    deep = "<a>" * 300 + "</a>" * 300
    too_deep = client.post(
        "/sso/acme/acs/", {"SAMLResponse": base64.b64encode(deep.encode()).decode()}
    )
    assert refused_as(too_deep, "not well-formed XML")
    reason = re.compile(r'id="sso-reason">([^<]*)<')
    assert (
        reason.findall(undecryptable.content.decode())
        == reason.findall(too_deep.content.decode())
        == [html.escape(sso.REFUSED_PAGE_REASON)]
    )
    assert signed_in_as(client) is None


def test_during_a_rotation_a_response_for_the_current_key_keeps_its_own_reason(
    pysaml2_idp, tmp_path, xmlsec1
):
    config = sso.sp_key_rotate(actor=ADMIN, config=SSOConfig.objects.get(org__slug="acme"))
    # An IdP that took the new (current) certificate encrypts to it.
    old = "".join(x for x in config.sp_previous_certificate.splitlines() if "CERT" not in x)
    metadata = re.sub(
        r"<md:KeyDescriptor[^>]*>(?:(?!</md:KeyDescriptor>).)*</md:KeyDescriptor>",
        lambda m: "" if old in m.group(0).replace("\n", "") else m.group(0),
        Client().get("/sso/acme/metadata/").content.decode(),
        flags=re.S,
    )
    assert old not in metadata.replace("\n", "") and "KeyDescriptor" in metadata
    idp = InteropIdP(config=_idp_config(tmp_path, xmlsec1, metadata))
    client = Client()
    encoded = respond(idp, begin_unverified(client), sign_assertion=False, sign_response=False,
                      encrypt_assertion=True)  # fmt: skip
    response = client.post("/sso/acme/acs/", {"SAMLResponse": encoded})
    # Decrypted with the current key and refused for what is wrong with it (no signature),
    # not retried with the previous key and recorded as "failed to decrypt".
    assert refused_as(response, "The Assertion of the Response is not signed")
    assert "decrypt" not in AuditLog.objects.get(action="sso.refused").changes["after"]["reason"]
