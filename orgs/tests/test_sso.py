"""SAML single sign-on: a test IdP in the suite signs responses and posts them to the ACS."""

import base64
import html
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from orgs import sso
from orgs.audit import Actor
from orgs.config import ConfigError, config_apply
from orgs.models import AuditLog, Membership, SSOAuthnRequest, SSOConfig, User

from .saml_idp import TestIdP, b64

pytestmark = pytest.mark.django_db
ADMIN = Actor(via="test")
SP = {
    "sp_entity_id": "http://testserver/sso/acme/metadata/",
    "acs_url": "http://testserver/sso/acme/acs/",
}
GROUPS = "groups"  # the Okta preset's attribute names
ROLES = {"Bonito Admins": "admin", "Engineering": "member", "Finance": "viewer"}


@pytest.fixture(autouse=True)
def _no_acs_limit(settings):
    settings.SSO_ACS_PER_MINUTE = 0  # the flood test turns it on for its own address


@pytest.fixture(scope="module")
def idp():
    return TestIdP()


@pytest.fixture(scope="module")
def other_idp():
    return TestIdP(entity_id="https://idp.globex.test/saml", name="globex-idp")


def verify_domains(org, *domains):
    """What a platform admin does once they have checked the org owns its domains."""
    sso.sso_domains_verify(actor=Actor(via="test-platform-admin"), org=org, domains=domains)


@pytest.fixture
def acme_sso(org_a, alice, idp):
    config = sso.sso_config_save(
        actor=ADMIN,
        org=org_a,
        preset="okta",
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_slo_url=idp.slo_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
        group_roles=ROLES,
    )
    verify_domains(org_a, "acme.test")
    return config


def start(client, slug="acme", nxt="/o/acme/keys/") -> str:
    """SP-initiated: the browser asks Bonito to sign in and is sent to the IdP."""
    response = client.get(f"/sso/{slug}/login/", {"next": nxt})
    assert response.status_code == 302
    assert response["Location"].startswith("https://idp.")
    return TestIdP.authn_request_id(response["Location"])


def post(client, xml: str, slug="acme"):
    return client.post(f"/sso/{slug}/acs/", {"SAMLResponse": b64(xml)})


def signed_in_as(client) -> str | None:
    response = client.get("/")
    if response.status_code == 302 and "/login/" in response["Location"]:
        return None
    return (
        client.session.get("_auth_user_id")
        and User.objects.get(pk=client.session["_auth_user_id"]).email
    )


def refusals() -> list[AuditLog]:
    return list(AuditLog.objects.filter(action="sso.refused").order_by("id"))


def refused_as(response, reason: str) -> bool:
    """Refused with the one generic page (no oracle, no library detail), the reason in
    the newest sso.refused row."""
    page = html.unescape(response.content.decode())
    return (
        response.status_code == 403
        and sso.REFUSED_PAGE_REASON in page
        and reason.lower() not in page.lower()
        and reason.lower() in refusals()[-1].changes["after"]["reason"].lower()
    )


# ------------------------------------------------------------------------------ happy path
def test_a_valid_response_signs_in_with_the_mapped_role_and_provisions_the_user(acme_sso, idp):
    client = Client()
    session_before = client.session.session_key  # an anonymous session exists first
    assert session_before and client.cookies["sessionid"].value == session_before
    request_id = start(client)
    xml = idp.signed_response(
        **SP,
        in_response_to=request_id,
        name_id="dana@acme.test",
        attributes={"email": ["Dana@Acme.test"], "name": ["Dana Scully"], GROUPS: ["Engineering"]},
    )
    response = post(client, xml)
    assert response.status_code == 302 and response["Location"] == "/o/acme/keys/"
    dana = User.objects.get(email="dana@acme.test")  # created just in time
    assert dana.name == "Dana Scully" and not dana.has_usable_password()
    assert Membership.objects.get(org=acme_sso.org, user=dana).role == "member"
    assert signed_in_as(client) == "dana@acme.test"
    assert client.get("/o/acme/keys/").status_code == 200
    assert client.cookies["sessionid"].value != session_before  # rotated at login
    assert 12 * 3600 - 60 < client.session.get_expiry_age() <= 12 * 3600
    login = AuditLog.objects.get(action="sso.login")
    assert login.changes["after"] == {
        "email": "dana@acme.test",
        "role": "member",
        "groups": ["Engineering"],
    }
    assert login.ip and login.actor_label == "dana@acme.test"


def test_group_mapping_is_reapplied_at_every_login_and_no_mapped_group_means_no_access(
    acme_sso, idp
):
    def login_with(groups):
        client = Client()
        xml = idp.signed_response(
            **SP,
            in_response_to=start(client),
            name_id="dana@acme.test",
            attributes={GROUPS: groups},
        )
        return client, post(client, xml)

    _c, response = login_with(["Engineering", "Bonito Admins"])  # the highest role wins
    assert response.status_code == 302
    dana = User.objects.get(email="dana@acme.test")
    assert Membership.objects.get(user=dana).role == "admin"
    _c, response = login_with(["Finance"])
    assert Membership.objects.get(user=dana).role == "viewer"
    client, response = login_with(["Interns"])
    assert response.status_code == 403
    assert b"is in no group that has a role" in response.content
    assert not Membership.objects.filter(user=dana).exists()  # access taken away
    assert signed_in_as(client) is None
    # With a default role, such users get it.
    sso.sso_config_save(actor=ADMIN, org=acme_sso.org, default_role="viewer")
    _c, response = login_with([])
    assert response.status_code == 302 and Membership.objects.get(user=dana).role == "viewer"


def test_idp_initiated_login_is_off_by_default_and_works_when_allowed(acme_sso, idp):
    xml = idp.signed_response(**SP, in_response_to=None, name_id="dana@acme.test",
                              attributes={GROUPS: ["Engineering"]})  # fmt: skip
    client = Client()
    response = post(client, xml)
    assert response.status_code == 403 and b"IdP-initiated login is off" in response.content
    sso.sso_config_save(actor=ADMIN, org=acme_sso.org, allow_idp_initiated=True)
    xml = idp.signed_response(**SP, in_response_to=None, name_id="dana@acme.test",
                              attributes={GROUPS: ["Engineering"]})  # fmt: skip
    response = post(client, xml)
    assert response.status_code == 302 and signed_in_as(client) == "dana@acme.test"


# ------------------------------------------------------------------------------ refusals
def _valid(idp, request_id, **overrides):
    kwargs = {
        **SP,
        "in_response_to": request_id,
        "name_id": "dana@acme.test",
        "attributes": {GROUPS: ["Engineering"]},
    }
    return {**kwargs, **overrides}


def tampered(idp, rid, _other):
    xml = idp.signed_response(**_valid(idp, rid))
    return xml.replace(">Engineering<", ">Bonito Admins<")  # after signing


def unsigned(idp, rid, _other):
    a = idp.assertion(**_valid(idp, rid))
    return idp.response(a, acs_url=SP["acs_url"], in_response_to=rid, issuer=idp.entity_id)


def wrapped(idp, rid, _other):
    # XSW: a genuine signed assertion (for a viewer) hidden in Extensions, and a forged
    # unsigned one (for an admin) where the SP reads.
    legit = idp.sign(
        idp.assertion(
            **_valid(idp, rid, name_id="vic@acme.test", attributes={GROUPS: ["Finance"]}),
            assertion_id="_legit",
        )
    )
    forged = idp.assertion(
        **_valid(idp, rid, name_id="mallory@acme.test", attributes={GROUPS: ["Bonito Admins"]}),
        assertion_id="_legit",
    )
    return idp.response(
        forged,
        acs_url=SP["acs_url"],
        in_response_to=rid,
        issuer=idp.entity_id,
        extensions=f"<samlp:Extensions>{legit}</samlp:Extensions>",
    )


def wrong_audience(idp, rid, _other):
    return idp.signed_response(
        **_valid(idp, rid, audience="http://testserver/sso/globex/metadata/")
    )


def expired(idp, rid, _other):
    past = datetime.now(UTC) - timedelta(hours=2)
    return idp.signed_response(
        **_valid(idp, rid, not_before=past - timedelta(minutes=5), not_on_or_after=past)
    )


def not_yet_valid(idp, rid, _other):
    future = datetime.now(UTC) + timedelta(hours=1)
    return idp.signed_response(
        **_valid(idp, rid, not_before=future, not_on_or_after=future + timedelta(minutes=5))
    )


def unknown_in_response_to(idp, rid, _other):
    return idp.signed_response(**_valid(idp, "_not-a-request-we-sent"))


def comment_injection(idp, rid, _other):
    # The IdP signs evil-controlled alice@acme.test.evil.test; a comment is slipped into
    # the NameID afterwards (comments are outside the signature). A vulnerable SP reads
    # the text before the comment: alice@acme.test, an admin.
    xml = idp.signed_response(**_valid(idp, rid, name_id="alice@acme.test.evil.test"))
    return xml.replace(">alice@acme.test.evil.test<", ">alice@acme.test<!---->.evil.test<")


def xxe(idp, rid, _other):
    xml = idp.signed_response(**_valid(idp, rid, name_id="&xxe;@acme.test"))
    doctype = '<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    return f'<?xml version="1.0"?>{doctype}{xml}'.replace("&amp;xxe;", "&xxe;")


def outside_domains(idp, rid, _other):
    return idp.signed_response(**_valid(idp, rid, name_id="dana@elsewhere.test"))


def sha1_signed(idp, rid, _other):
    return idp.signed_response(sha1=True, **_valid(idp, rid))


def other_orgs_idp(idp, rid, other):
    # Globex's IdP (its own key) vouching for someone, posted to Acme's ACS.
    a = other.sign(other.assertion(**_valid(other, rid, issuer=other.entity_id)))
    return other.response(a, acs_url=SP["acs_url"], in_response_to=rid, issuer=other.entity_id)


def another_key(idp, rid, other):
    # Someone else's key claiming to be Acme's IdP.
    a = other.sign(other.assertion(**_valid(other, rid, issuer=idp.entity_id)))
    return other.response(a, acs_url=SP["acs_url"], in_response_to=rid, issuer=idp.entity_id)


def wrong_recipient(idp, rid, _other):
    return idp.signed_response(**_valid(idp, rid, recipient="https://evil.test/acs/"))


def wrong_destination(idp, rid, _other):
    a = idp.sign(idp.assertion(**_valid(idp, rid)))
    return idp.response(
        a,
        acs_url=SP["acs_url"],
        in_response_to=rid,
        issuer=idp.entity_id,
        destination="https://evil.test/acs/",
    )


@pytest.mark.parametrize(
    "build,reason",
    [
        (tampered, "Signature validation failed"),
        (unsigned, "The Assertion of the Response is not signed"),
        (wrapped, "must contain 1 assertion"),
        (wrong_audience, "is not a valid audience"),
        (expired, "Could not validate timestamp: expired"),
        (not_yet_valid, "not yet valid"),
        (unknown_in_response_to, "InResponseTo does not match a sign-in this site started"),
        (
            comment_injection,
            "alice@acme.test.evil.test is not in this organization's email domains",
        ),
        (xxe, "declares a DTD or entities"),
        (outside_domains, "dana@elsewhere.test is not in this organization's email domains"),
        (sha1_signed, "deprecated"),
        (other_orgs_idp, "Invalid issuer"),
        (another_key, "Signature validation failed"),
        (wrong_recipient, "A valid SubjectConfirmation was not found"),
        (wrong_destination, "instead of https://evil.test/acs/"),
    ],
)
def test_bad_responses_are_refused_with_a_clear_page_and_an_audit_row(
    acme_sso, idp, other_idp, alice, build, reason
):
    client = Client()
    request_id = start(client)
    users_before = set(User.objects.values_list("email", flat=True))
    response = post(client, build(idp, request_id, other_idp))
    assert response.status_code == 403
    page = html.unescape(response.content.decode())
    assert "Single sign-on refused" in page
    if build in (comment_injection, outside_domains):  # about the user: said on the page
        assert reason.lower() in page.lower(), page
    else:  # about the message: the reason is for the administrator (the audit row below)
        assert sso.REFUSED_PAGE_REASON in page and reason.lower() not in page.lower(), page
    assert signed_in_as(client) is None
    assert set(User.objects.values_list("email", flat=True)) == users_before  # nobody created
    assert Membership.objects.get(user=alice).role == "admin"  # nothing changed
    (row,) = refusals()
    assert row.org == acme_sso.org and reason.lower() in row.changes["after"]["reason"].lower()
    assert "BEGIN" not in str(row.changes)  # no key or certificate material in the audit


def test_a_replayed_response_is_refused(acme_sso, idp):
    client = Client()
    xml = idp.signed_response(**_valid(idp, start(client)))
    assert post(client, xml).status_code == 302
    thief = Client()
    response = post(thief, xml)
    assert refused_as(response, "already used")
    assert signed_in_as(thief) is None
    assert "already used" in refusals()[-1].changes["after"]["reason"]


def test_an_assertion_id_is_accepted_once_even_in_a_new_response(acme_sso, idp):
    client = Client()
    first = idp.signed_response(**_valid(idp, start(client)), assertion_id="_same")
    assert post(client, first).status_code == 302
    again = idp.signed_response(**_valid(idp, start(client)), assertion_id="_same")
    response = post(client, again)
    assert refused_as(response, "already used (a replay)")


def test_oversized_and_garbage_posts_are_refused_before_parsing(acme_sso, settings):
    client = Client()
    start(client)
    big = client.post(
        "/sso/acme/acs/", {"SAMLResponse": "A" * (settings.SSO_MAX_RESPONSE_BYTES + 10)}
    )
    assert refused_as(big, "larger than this site accepts")
    junk = client.post("/sso/acme/acs/", {"SAMLResponse": base64.b64encode(b"<not xml").decode()})
    assert refused_as(junk, "not well-formed XML")
    empty = client.post("/sso/acme/acs/", {})
    assert refused_as(empty, "No SAML response")
    assert len(refusals()) == 3


def globex_sso(org_b, other_idp, domains):
    return sso.sso_config_save(
        actor=ADMIN,
        org=org_b,
        idp_entity_id=other_idp.entity_id,
        idp_sso_url=other_idp.sso_url,
        idp_x509_cert=other_idp.cert,
        email_domains=domains,
        group_roles={"Everyone": "member"},
    )


def test_an_assertion_for_org_a_never_grants_org_b(acme_sso, idp, org_b, charlie, other_idp):
    globex_sso(org_b, other_idp, ["globex.test"])
    verify_domains(org_b, "globex.test")

    def to_globex(signer, request_id):
        xml = signer.signed_response(
            sp_entity_id="http://testserver/sso/globex/metadata/",
            acs_url="http://testserver/sso/globex/acs/",
            in_response_to=request_id,
            name_id="charlie@globex.test",
            attributes={GROUPS: ["Everyone"]},
        )
        return post(client, xml, slug="globex")

    client = Client()
    # Acme's IdP (valid for Acme) signs a response and it is posted to Globex's ACS.
    response = to_globex(idp, start(client, slug="globex", nxt="/o/globex/"))
    assert response.status_code == 403 and signed_in_as(client) is None
    # And a request id started for Acme cannot be answered at Globex.
    response = to_globex(other_idp, start(client))
    assert refused_as(response, "InResponseTo does not match")


# ------------------------------------------------------------------------------ SP endpoints
def test_relay_state_stays_on_this_site(acme_sso, idp):
    for nxt, expected in [
        ("/o/acme/usage/?range=7d", "/o/acme/usage/?range=7d"),
        ("https://evil.test/phish", "/o/acme/"),
        ("//evil.test/phish", "/o/acme/"),
        ("/\\evil.test", "/o/acme/"),
    ]:
        client = Client()
        xml = idp.signed_response(**_valid(idp, start(client, nxt=nxt)))
        assert post(client, xml)["Location"] == expected


def test_sp_metadata_follows_the_host_and_trusts_forwarded_headers_only_behind_a_proxy(
    acme_sso, settings
):
    settings.ALLOWED_HOSTS = ["sso.example.com", "public.example.com", "testserver"]
    client = Client()
    response = client.get("/sso/acme/metadata/", HTTP_HOST="sso.example.com:8443",
                          HTTP_X_FORWARDED_HOST="public.example.com")  # fmt: skip
    assert response.status_code == 200
    assert response["Content-Type"] == "application/samlmetadata+xml"
    xml = response.content.decode()
    assert 'entityID="http://sso.example.com:8443/sso/acme/metadata/"' in xml
    assert 'Location="http://sso.example.com:8443/sso/acme/acs/"' in xml
    assert "public.example.com" not in xml
    settings.USE_X_FORWARDED_HOST = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    xml = client.get("/sso/acme/metadata/", HTTP_HOST="10.0.0.5:8000",
                     HTTP_X_FORWARDED_HOST="public.example.com",
                     HTTP_X_FORWARDED_PROTO="https").content.decode()  # fmt: skip
    assert 'entityID="https://public.example.com/sso/acme/metadata/"' in xml


def test_orgs_without_sso_have_no_sp_endpoints(org_b):
    assert Client().get("/sso/globex/metadata/").status_code == 404
    assert Client().get("/sso/nobody/login/").status_code == 404


def test_single_logout_from_the_idp_and_from_the_user(acme_sso, idp):
    client = Client()
    assert post(client, idp.signed_response(**_valid(idp, start(client)))).status_code == 302
    assert signed_in_as(client) == "dana@acme.test"
    # The IdP ends the session: Bonito logs out and answers with a LogoutResponse.
    query = idp.signed_logout_request(
        sls_url="http://testserver/sso/acme/sls/", name_id="dana@acme.test"
    )
    response = client.get(f"/sso/acme/sls/?{query}")
    assert response.status_code == 302 and response["Location"].startswith(idp.slo_url)
    assert "SAMLResponse" in parse_qs(urlparse(response["Location"]).query)
    assert signed_in_as(client) is None
    # The user logs out here: the session ends and the IdP is asked to end its own.
    assert post(client, idp.signed_response(**_valid(idp, start(client)))).status_code == 302
    page = client.get("/o/acme/").content.decode()
    assert 'action="/sso/acme/sls/"' in page  # the Log out button goes through SSO
    client.get("/sso/acme/sls/")  # a bare GET (say, an <img> elsewhere) logs nobody out
    assert signed_in_as(client) == "dana@acme.test"
    response = client.post("/sso/acme/sls/")
    assert response["Location"].startswith(idp.slo_url)
    assert "SAMLRequest" in parse_qs(urlparse(response["Location"]).query)
    assert signed_in_as(client) is None
    assert AuditLog.objects.filter(action="sso.logout").count() == 2


# ------------------------------------------------------------------------------ SSO required
def test_sso_required_turns_off_passwords_except_for_the_break_glass_owner(acme_sso, alice, bob):
    from conftest import PASSWORD

    sso.sso_config_save(
        actor=ADMIN, org=acme_sso.org, sso_required=True, break_glass_email="alice@acme.test"
    )
    client = Client()
    response = client.post("/login/", {"username": "bob@acme.test", "password": PASSWORD})
    assert response.status_code == 200
    assert "signs in through single sign-on" in response.content.decode()
    assert b'href="/sso/acme/login/' in response.content
    assert signed_in_as(client) is None
    # The break-glass owner still can.
    response = client.post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 302 and signed_in_as(client) == "alice@acme.test"
    # The admin login is closed to bob too (the backend refuses, not just the form).
    from django.contrib.auth import authenticate

    assert authenticate(username="bob@acme.test", password=PASSWORD) is None


def test_an_invitation_to_an_sso_required_org_makes_no_password_and_no_session(acme_sso, alice):
    """The invitee's first sign-in is the IdP's: accepting makes an account without a
    password and sends the browser to SSO (a password session would go around it)."""
    from orgs import services

    sso.sso_config_save(
        actor=ADMIN, org=acme_sso.org, sso_required=True, break_glass_email="alice@acme.test"
    )
    _, raw = services.invitation_create(actor=ADMIN, org=acme_sso.org, email="new@acme.test")
    client = Client()
    page = client.get(f"/invite/{raw}/")
    assert b"single sign-on" in page.content and b'name="password"' not in page.content
    response = client.post(f"/invite/{raw}/", {"name": "New", "password": "chosen-password-1"})
    assert response.status_code == 302 and response["Location"] == "/sso/acme/login/"
    assert signed_in_as(client) is None
    user = User.objects.get(email="new@acme.test")
    assert not user.has_usable_password() and user.name == "New"
    assert Membership.objects.filter(org=acme_sso.org, user=user).exists()
    # Outside the SSO domains, an invitation still makes a password account.
    _, raw = services.invitation_create(actor=ADMIN, org=acme_sso.org, email="guest@other.test")
    client.post(f"/invite/{raw}/", {"name": "Guest", "password": "chosen-password-2"})
    assert signed_in_as(client) == "guest@other.test"


def test_requiring_sso_needs_a_break_glass_admin(acme_sso, bob):
    with pytest.raises(Exception, match="break-glass owner"):
        sso.sso_config_save(actor=ADMIN, org=acme_sso.org, sso_required=True)
    with pytest.raises(Exception, match="must be an admin"):
        sso.sso_config_save(
            actor=ADMIN, org=acme_sso.org, sso_required=True, break_glass_email="bob@acme.test"
        )


def test_the_login_page_sends_users_to_their_orgs_idp_by_email_domain(acme_sso):
    client = Client()
    response = client.post("/sso/", {"email": "someone@ACME.test", "next": "/o/acme/logs/"})
    assert response.status_code == 302
    assert response["Location"] == "/sso/acme/login/?next=%2Fo%2Facme%2Flogs%2F"
    # A next with a query of its own stays whole (encoded), not split into parameters.
    response = client.post("/sso/", {"email": "a@acme.test", "next": "/o/acme/logs/?q=1&p=2"})
    nxt = parse_qs(urlparse(response["Location"]).query)["next"]
    assert nxt == ["/o/acme/logs/?q=1&p=2"]
    response = client.post("/sso/", {"email": "someone@nowhere.test"})
    assert response.status_code == 200 and b"No organization signs in" in response.content
    assert b'action="/sso/"' in client.get("/login/").content


# ------------------------------------------------------------------------------ configuration
def test_admins_configure_sso_from_idp_metadata_in_settings(alice_client, bob_client, idp, org_a):
    page = alice_client.get("/o/acme/settings/sso/")
    assert page.status_code == 200
    assert b"http://testserver/sso/acme/acs/" in page.content
    for idp_name in (b"howto-okta", b"howto-azure", b"howto-google"):
        assert idp_name in page.content
    assert bob_client.get("/o/acme/settings/sso/").status_code == 403
    response = alice_client.post(
        "/o/acme/settings/sso/",
        {
            "preset": "azure_ad",
            "metadata_xml": idp.metadata(),
            "email_domains": "acme.test, Acme.Example",
            "group_roles": "Bonito Admins = admin\nEngineering = member",
            "default_role": "",
            "session_hours": 8,
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    config = SSOConfig.objects.get(org=org_a)
    assert (config.idp_entity_id, config.idp_sso_url, config.idp_slo_url) == (
        idp.entity_id,
        idp.sso_url,
        idp.slo_url,
    )
    assert config.email_domains == ["acme.example", "acme.test"]
    assert config.group_roles == {"Bonito Admins": "admin", "Engineering": "member"}
    assert sso.attribute_names(config)["groups"].endswith("/claims/groups")
    row = AuditLog.objects.get(action="sso.config_create")
    assert row.actor_label == "alice@acme.test" and "idp_x509_cert" not in row.changes["after"]
    bad = alice_client.post(
        "/o/acme/settings/sso/",
        {"preset": "okta", "idp_entity_id": "x", "idp_sso_url": "https://idp.test/sso",
         "idp_x509_cert": "not a certificate", "email_domains": "acme.test", "session_hours": 8},
    )  # fmt: skip
    assert bad.status_code == 400 and b"not a readable X.509 certificate" in bad.content


def test_apply_config_sets_sso_and_is_idempotent(org_a, alice, idp):
    data = {
        "orgs": [
            {
                "slug": "acme",
                "sso": {
                    "preset": "google",
                    "idp_entity_id": idp.entity_id,
                    "idp_sso_url": idp.sso_url,
                    "idp_x509_cert": idp.cert,
                    "email_domains": ["acme.test"],
                    "group_roles": {"eng@acme.test": "member", "admins@acme.test": "admin"},
                    "default_role": None,
                    "sso_required": True,
                    "break_glass": "alice@acme.test",
                },
            }
        ]
    }
    config_apply(actor=Actor(via="apply_config"), data=data)
    config = SSOConfig.objects.get(org=org_a)
    assert config.sso_required and config.break_glass_user == alice
    assert config.default_role == ""
    rows = AuditLog.objects.filter(action__startswith="sso.").count()
    config_apply(actor=Actor(via="apply_config"), data=data)
    assert AuditLog.objects.filter(action__startswith="sso.").count() == rows  # no change
    data["orgs"][0]["sso"]["group_roles"] = {"eng@acme.test": "owner"}
    with pytest.raises(
        ConfigError, match=r"orgs\[0\]\.sso: group_roles: 'eng@acme.test' maps to 'owner'"
    ):
        config_apply(actor=Actor(via="apply_config"), data=data)
    data["orgs"][0]["sso"]["colour"] = "blue"
    with pytest.raises(ConfigError, match="unknown key"):
        config_apply(actor=Actor(via="apply_config"), data=data)


def test_an_email_domain_belongs_to_one_orgs_idp(acme_sso, org_b, other_idp):
    with pytest.raises(ValidationError, match="verified for another organization") as refused:
        globex_sso(org_b, other_idp, ["acme.test"])
    assert "acme" not in str(refused.value).replace("acme.test", "")  # which org: not said


def test_platform_admins_set_an_orgs_idp_in_the_django_admin(org_a, alice, idp):
    root = User.objects.create_superuser(email="root@bonito.test", password="x-long-password-1")
    client = Client()
    client.force_login(root)
    assert client.get("/admin/orgs/ssoconfig/add/").status_code == 200
    form = {
        "org": org_a.pk,
        "enabled": "on",
        "preset": "okta",
        "idp_entity_id": idp.entity_id,
        "idp_sso_url": idp.sso_url,
        "idp_x509_cert": "garbage",
        "email_domains": '["acme.test"]',
        "group_roles": '{"Engineering": "member"}',
        "session_hours": 12,
        "signature_scope": "assertion",
        "require_signed_logout": "on",
    }
    refused = client.post("/admin/orgs/ssoconfig/add/", form)
    assert refused.status_code == 200 and b"not a readable X.509 certificate" in refused.content
    assert not SSOConfig.objects.exists()
    saved = client.post("/admin/orgs/ssoconfig/add/", form | {"idp_x509_cert": idp.cert})
    assert saved.status_code == 302
    assert SSOConfig.objects.get(org=org_a).group_roles == {"Engineering": "member"}
    row = AuditLog.objects.get(action="sso.config_create")
    assert row.actor_label == "root@bonito.test"


def test_over_https_the_response_must_come_back_through_the_browser_that_started(
    acme_sso, idp, settings
):
    settings.ALLOWED_HOSTS = ["testserver"]
    https = {"sp_entity_id": "https://testserver/sso/acme/metadata/",
             "acs_url": "https://testserver/sso/acme/acs/"}  # fmt: skip
    victim = Client()
    started = victim.get("/sso/acme/login/", secure=True)
    cookie = started.cookies["bonito_sso"]
    assert cookie["samesite"] == "None" and cookie["secure"] and cookie["httponly"]
    assert cookie["path"] == "/sso/acme/"
    rid = TestIdP.authn_request_id(started["Location"])
    # Login CSRF: the attacker's own valid response, pushed into another browser.
    attacker = Client()
    xml = idp.signed_response(**https, in_response_to=rid, name_id="dana@acme.test",
                              attributes={GROUPS: ["Engineering"]})  # fmt: skip
    response = attacker.post("/sso/acme/acs/", {"SAMLResponse": b64(xml)}, secure=True)
    assert response.status_code == 403 and b"started in another browser" in response.content
    # The browser that started it gets in (the cookie comes back with the IdP's POST).
    response = victim.post("/sso/acme/acs/", {"SAMLResponse": b64(xml)}, secure=True)
    assert response.status_code == 302
    assert response.cookies["bonito_sso"].value == ""  # spent


def test_a_flood_of_posts_to_the_acs_is_cut_off_without_filling_the_audit_log(acme_sso, settings):
    import uuid

    settings.SSO_ACS_PER_MINUTE = 3
    address = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"  # a counter of its own
    client = Client(REMOTE_ADDR=address)
    statuses = [
        client.post("/sso/acme/acs/", {"SAMLResponse": "junk"}).status_code for _ in range(5)
    ]
    assert statuses == [403, 403, 403, 429, 429]
    assert len(refusals()) == 3
    page = client.post("/sso/acme/acs/", {"SAMLResponse": "junk"})
    assert b"Too many sign-in attempts" in page.content
    assert Client().post("/sso/acme/acs/", {"SAMLResponse": "junk"}).status_code == 403  # others


def test_a_flood_of_sign_in_starts_is_cut_off_without_filling_the_requests_table(
    acme_sso, settings
):
    """Each start of a sign-in stores its AuthnRequest (kept a day): anyone can ask for one."""
    import uuid

    settings.SSO_ACS_PER_MINUTE = 3
    address = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    client = Client(REMOTE_ADDR=address)
    before = SSOAuthnRequest.objects.count()
    statuses = [client.get("/sso/acme/login/").status_code for _ in range(6)]
    assert statuses == [302, 302, 302, 429, 429, 429]
    assert SSOAuthnRequest.objects.count() == before + 3
    assert Client().get("/sso/acme/login/").status_code == 302  # another address


def test_a_refusal_is_one_log_line_whatever_the_unsigned_response_says(acme_sso, idp, caplog):
    """The reason may quote the response (its Issuer, its Destination) before any signature
    is checked: anyone can post one, so its line breaks must not forge log lines."""
    client = Client()
    forged = "https://idp.example.test/saml\n2026-01-01 00:00:00,000 CRITICAL bonito.sso forged"
    a = idp.assertion(**_valid(idp, start(client)))
    xml = idp.response(a, acs_url=SP["acs_url"], in_response_to=None, issuer=forged)
    xml = xml.replace("<samlp:Response ", f'<samlp:Response InResponseTo="{start(client)}" ', 1)
    with caplog.at_level("WARNING", logger="bonito.sso"):
        response = post(client, xml)
    assert response.status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "bonito.sso"]
    assert lines and "forged" in lines[-1]  # the reason is kept, escaped
    assert all("\n" not in line and "\r" not in line for line in lines)
