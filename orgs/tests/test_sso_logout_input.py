"""The single-logout endpoint refuses malformed logout messages with 400 and an audit row
(never a 500), by the HTTP-Redirect binding (GET) and the HTTP-POST binding, and limits
how many it looks at per client address."""

import base64
import uuid
import zlib

import pytest
from django.test import Client

from orgs.models import AuditLog

from .test_sso import _no_acs_limit, acme_sso, idp  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("acme_sso")]
SLS = "/sso/acme/sls/"


def deflate(data: bytes) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(compressor.compress(data) + compressor.flush()).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


XXE = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&x;'
    b"</samlp:LogoutRequest>"
)
WRONG_ROOT = b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_x"/>'
BOMB = b"<a>" + b" " * (4 * 1024 * 1024) + b"</a>"  # a few KB deflated, 4 MB inflated

# (name, GET value, POST value, words of the reason)
CASES = [
    ("bad base64", "%%%not-base64%%%", "%%%not-base64%%%", "not valid base64"),
    ("bad deflate", b64(b"plainly not deflated"), None, "not DEFLATE-compressed"),
    ("not xml", deflate(b"<not xml"), b64(b"<not xml"), "not well-formed XML"),
    ("dtd", deflate(XXE), b64(XXE), "declares a DTD or entities"),
    ("wrong root", deflate(WRONG_ROOT), b64(WRONG_ROOT), "is not a SAML LogoutRequest"),
    ("deflate bomb", deflate(BOMB), None, "larger than this site accepts"),
    ("empty", deflate(b""), b64(b""), "is empty"),
]


@pytest.mark.parametrize("name,get_value,post_value,reason", CASES, ids=[c[0] for c in CASES])
def test_malformed_logout_requests_get_400_and_an_audit_row(name, get_value, post_value, reason):
    client = Client()
    for method, value in (("get", get_value), ("post", post_value)):
        if value is None:
            continue
        before = AuditLog.objects.filter(action="sso.refused").count()
        response = getattr(client, method)(SLS, {"SAMLRequest": value})
        assert response.status_code == 400, (method, response.status_code)
        assert reason.encode() in response.content, (method, response.content[:2000])
        rows = AuditLog.objects.filter(action="sso.refused").order_by("id")
        assert rows.count() == before + 1
        assert reason in rows.last().changes["after"]["reason"]


def test_a_logout_response_that_is_not_one_is_refused():
    response = Client().get(SLS, {"SAMLResponse": deflate(WRONG_ROOT)})
    assert response.status_code == 400 and b"is not a SAML LogoutResponse" in response.content


def test_an_oversized_logout_message_is_refused_before_decoding(settings):
    big = "A" * (settings.SSO_MAX_RESPONSE_BYTES + 10)
    for method in ("get", "post"):
        response = getattr(Client(), method)(SLS, {"SAMLResponse": big})
        assert response.status_code == 400 and b"larger than this site" in response.content


def test_a_flood_of_logout_messages_is_cut_off_per_client_address(settings):
    settings.SSO_ACS_PER_MINUTE = 3
    address = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    client = Client(REMOTE_ADDR=address)
    statuses = [client.get(SLS, {"SAMLRequest": "junk"}).status_code for _ in range(5)]
    assert statuses == [400, 400, 400, 429, 429]
    assert AuditLog.objects.filter(action="sso.refused").count() == 3
    assert Client().post(SLS, {"SAMLRequest": "junk"}).status_code == 400  # others
