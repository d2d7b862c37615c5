"""Bonito's own checks on the assertion python3-saml accepted: it answers exactly this
sign-in (its own InResponseTo, not the unsigned Response's), names this org's ACS and
entity id exactly, and its id is remembered for as long as it could be accepted."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from orgs import sso
from orgs.audit import Actor
from orgs.models import SSOAssertion, User

from .saml_idp import b64
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


def respond(idp, *, response_in_response_to, destination=None, **assertion):
    """A Response (unsigned) around an assertion signed by the IdP."""
    signed = idp.sign(idp.assertion(**assertion))
    return idp.response(
        signed,
        acs_url=SP["acs_url"],
        in_response_to=response_in_response_to,
        issuer=idp.entity_id,
        destination=destination,
    )


def allow_idp_initiated(config):
    sso.sso_config_save(actor=ADMIN, org=config.org, allow_idp_initiated=True)


# ------------------------------------------------------------------------------ replays
def test_an_assertion_without_a_confirmation_expiry_is_remembered_until_its_conditions_end(
    acme_sso, idp, monkeypatch
):
    allow_idp_initiated(acme_sso)
    conditions_end = datetime.now(UTC) + timedelta(days=2)
    xml = idp.signed_response(
        **_valid(idp, None),
        scd_not_on_or_after=None,
        conditions_not_on_or_after=conditions_end,
    )
    assert post(Client(), xml).status_code == 302
    (seen,) = SSOAssertion.objects.all()
    assert seen.not_on_or_after >= conditions_end  # not now + session_hours (12)
    # 13 hours later the Conditions still hold: the same assertion is still a replay.
    later = datetime.now(UTC) + timedelta(hours=13)
    monkeypatch.setattr(timezone, "now", lambda: later)
    monkeypatch.setattr(OneLogin_Saml2_Utils, "now", staticmethod(lambda: int(later.timestamp())))
    thief = Client()
    assert refused_as(post(thief, xml), "already used (a replay)")
    assert signed_in_as(thief) is None


def test_the_id_is_remembered_until_the_later_of_the_two_expiries(acme_sso, idp):
    client = Client()
    conditions_end = datetime.now(UTC) + timedelta(hours=30)
    xml = idp.signed_response(
        **_valid(idp, start(client)),
        scd_not_on_or_after=datetime.now(UTC) + timedelta(minutes=5),
        conditions_not_on_or_after=conditions_end,
    )
    assert post(client, xml).status_code == 302
    assert SSOAssertion.objects.get().not_on_or_after >= conditions_end


def test_an_assertion_that_never_expires_is_refused(acme_sso, idp):
    client = Client()
    xml = idp.signed_response(
        **_valid(idp, start(client)), scd_not_on_or_after=None, conditions_not_on_or_after=None
    )
    assert refused_as(post(client, xml), "has no NotOnOrAfter")
    assert signed_in_as(client) is None and not SSOAssertion.objects.exists()


# ------------------------------------------------------------------------------ InResponseTo
def test_an_unsolicited_assertion_rewrapped_to_answer_our_request_is_refused(acme_sso, idp):
    # IdP-initiated login is off. A genuine unsolicited assertion (its confirmation answers
    # nothing), put in a new unsigned Response claiming to answer the victim's sign-in.
    client = Client()
    rid = start(client)
    xml = respond(idp, response_in_response_to=rid, **_valid(idp, None))
    assert refused_as(post(client, xml), "does not say which sign-in it answers")
    assert signed_in_as(client) is None
    assert not User.objects.filter(email="dana@acme.test").exists()


def test_the_assertion_itself_must_answer_the_pending_request(acme_sso, idp):
    client = Client()
    mine, other = start(client), start(client)
    # The Response says it answers `mine`, the signed assertion answers `other`.
    xml = respond(idp, response_in_response_to=mine, **_valid(idp, other))
    response = post(client, xml)
    assert response.status_code == 403 and signed_in_as(client) is None
    # Nothing was used up: the genuine answer to `mine` still signs in.
    assert post(client, idp.signed_response(**_valid(idp, mine))).status_code == 302


def test_an_assertion_answering_a_sign_in_cannot_be_replayed_as_unsolicited(acme_sso, idp):
    allow_idp_initiated(acme_sso)
    victim = Client()
    rid = start(victim)
    # Taken from the victim's sign-in, posted elsewhere with the Response's InResponseTo
    # removed (skipping the pending request and its browser binding).
    xml = respond(idp, response_in_response_to=None, **_valid(idp, rid))
    thief = Client()
    assert refused_as(post(thief, xml), "answers a sign-in")
    assert signed_in_as(thief) is None
    # Genuine IdP-initiated sign-in still works.
    assert post(thief, idp.signed_response(**_valid(idp, None))).status_code == 302


# ------------------------------------------------------------------------------ audience, URLs
def test_an_assertion_without_an_audience_restriction_is_refused(acme_sso, idp):
    client = Client()
    xml = idp.signed_response(**_valid(idp, start(client)), audience_restrictions=[])
    assert refused_as(post(client, xml), "has no AudienceRestriction")
    assert signed_in_as(client) is None


def test_every_audience_restriction_must_name_our_entity_id(acme_sso, idp):
    client = Client()
    xml = idp.signed_response(
        **_valid(idp, start(client)),
        audience_restrictions=[[SP["sp_entity_id"]], ["https://other.test/sp"]],
    )
    assert refused_as(post(client, xml), "does not name this organization's entity id")
    for audience in (SP["sp_entity_id"] + "x", SP["sp_entity_id"].rstrip("/")):
        client = Client()
        xml = idp.signed_response(**_valid(idp, start(client)), audience_restrictions=[[audience]])
        assert post(client, xml).status_code == 403 and signed_in_as(client) is None


def test_the_recipient_must_be_our_acs_url_not_contain_it(acme_sso, idp):
    client = Client()
    recipient = "https://evil.test/acs/?x=http://testserver/sso/acme/acs/"
    xml = idp.signed_response(**_valid(idp, start(client)), recipient=recipient)
    assert refused_as(post(client, xml), "Recipient")
    assert signed_in_as(client) is None


def test_the_destination_must_be_our_acs_url_not_start_with_it(acme_sso, idp):
    for destination in (
        "http://testserver/sso/acme/acs/../../globex/acs/",
        "http://testserver/sso/acme/acs/extra",
    ):
        client = Client()
        rid = start(client)
        xml = respond(idp, response_in_response_to=rid, destination=destination, **_valid(idp, rid))
        assert refused_as(post(client, xml), "is not this organization's ACS URL")
        assert signed_in_as(client) is None


def test_the_destination_matches_whatever_the_case_of_the_scheme_and_host(acme_sso, idp):
    client = Client()
    rid = start(client)
    xml = respond(
        idp,
        response_in_response_to=rid,
        destination="HTTP://TestServer/sso/acme/acs/",
        **_valid(idp, rid),
    )
    assert post(client, xml).status_code == 302 and signed_in_as(client) == "dana@acme.test"


def test_behind_a_proxy_the_forwarded_acs_url_is_the_one_to_match(acme_sso, idp, settings):
    settings.ALLOWED_HOSTS = ["public.example.com", "testserver"]
    settings.USE_X_FORWARDED_HOST = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = {"HTTP_HOST": "10.0.0.5:8000", "HTTP_X_FORWARDED_HOST": "public.example.com",
               "HTTP_X_FORWARDED_PROTO": "https"}  # fmt: skip
    public = {
        "sp_entity_id": "https://public.example.com/sso/acme/metadata/",
        "acs_url": "https://public.example.com/sso/acme/acs/",
    }

    def sign_in(**overrides):
        client = Client(**proxied)
        started = client.get("/sso/acme/login/")
        rid = idp.authn_request_id(started["Location"])
        xml = idp.signed_response(**{**_valid(idp, rid), **public, **overrides})
        return client, client.post("/sso/acme/acs/", {"SAMLResponse": b64(xml)})

    client, response = sign_in()
    assert response.status_code == 302, response.content.decode()[:2000]
    client, response = sign_in(recipient="http://10.0.0.5:8000/sso/acme/acs/")  # the inner URL
    assert refused_as(response, "SubjectConfirmation")
