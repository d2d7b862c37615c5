"""An org's IdP signs in only users of email domains verified as that org's: another org's
admin cannot point their own IdP at acme.test and sign in as Acme's users, make them
members, or lock them out of password sign-in."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)
import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from conftest import PASSWORD
from orgs import services, sso
from orgs.audit import Actor
from orgs.config import config_apply
from orgs.models import AuditLog, Membership, SSODomain, User

from .test_sso import (  # noqa: F401
    GROUPS,
    _no_acs_limit,
    acme_sso,
    idp,
    other_idp,
    post,
    signed_in_as,
    start,
    verify_domains,
)

pytestmark = pytest.mark.django_db
EVIL = Actor(via="test")
GLOBEX = {
    "sp_entity_id": "http://testserver/sso/globex/metadata/",
    "acs_url": "http://testserver/sso/globex/acs/",
}


@pytest.fixture
def evil_sso(org_b, charlie, other_idp):
    """Globex's admin claims Acme's domain for their own IdP (Acme uses no SSO)."""
    return sso.sso_config_save(
        actor=EVIL,
        org=org_b,
        idp_entity_id=other_idp.entity_id,
        idp_sso_url=other_idp.sso_url,
        idp_x509_cert=other_idp.cert,
        email_domains=["acme.test", "globex.test"],
        default_role="admin",
        allow_idp_initiated=True,
    )


def as_evil_idp(other_idp, email, client=None):
    client = client or Client()
    xml = other_idp.signed_response(
        **GLOBEX,
        in_response_to=start(client, slug="globex", nxt="/o/acme/"),
        name_id=email,
        attributes={"email": [email], GROUPS: ["Everyone"]},
    )
    return client, post(client, xml, slug="globex")


def refusal() -> dict:
    return AuditLog.objects.filter(action="sso.refused").latest("id").changes["after"]


def test_another_orgs_idp_cannot_sign_in_an_existing_user_of_an_unverified_domain(
    evil_sso, other_idp, org_a, org_b, alice
):
    client, response = as_evil_idp(other_idp, "alice@acme.test")
    assert response.status_code == 403
    assert b"not verified for this organization" in response.content
    assert signed_in_as(client) is None
    assert client.get("/o/acme/").status_code == 302  # no way into Acme
    assert not Membership.objects.filter(org=org_b, user=alice).exists()  # no JIT membership
    assert refusal()["email"] == "alice@acme.test"
    assert not AuditLog.objects.filter(action="sso.login").exists()


def test_another_orgs_idp_cannot_create_accounts_in_a_domain_it_does_not_own(
    evil_sso, other_idp, org_b
):
    users = User.objects.count()
    _client, response = as_evil_idp(other_idp, "newcomer@acme.test")
    assert response.status_code == 403
    assert User.objects.count() == users and not User.objects.filter(email__startswith="new")
    assert "not verified" in refusal()["reason"]


def test_an_idp_initiated_response_is_held_to_the_same_rule(evil_sso, other_idp, alice):
    client = Client()
    xml = other_idp.signed_response(
        **GLOBEX, in_response_to=None, name_id="alice@acme.test", attributes={GROUPS: []}
    )
    response = post(client, xml, slug="globex")
    assert response.status_code == 403 and signed_in_as(client) is None


def test_an_org_cannot_lock_out_users_of_a_domain_it_does_not_own(
    evil_sso, org_a, org_b, alice, charlie
):
    # Alice also belongs to Globex (invited); Globex then requires SSO.
    services.membership_add(actor=EVIL, org=org_b, user=alice, role="member")
    sso.sso_config_save(
        actor=EVIL, org=org_b, sso_required=True, break_glass_email="charlie@globex.test"
    )
    assert sso.password_blocked_by(alice) is None
    client = Client()
    response = client.post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 302 and signed_in_as(client) == "alice@acme.test"


def test_sso_required_still_applies_to_members_of_a_verified_domain(evil_sso, org_b, charlie):
    member = User.objects.create_user(email="gina@globex.test", password=PASSWORD)
    services.membership_add(actor=EVIL, org=org_b, user=member, role="member")
    services.membership_add(
        actor=EVIL, org=org_b, user=User.objects.create_user(email="root@globex.test"), role="admin"
    )
    sso.sso_config_save(
        actor=EVIL, org=org_b, sso_required=True, break_glass_email="charlie@globex.test"
    )
    assert sso.password_blocked_by(member) is None  # globex.test not verified yet
    verify_domains(org_b, "globex.test")
    assert sso.password_blocked_by(member).org == org_b


def test_a_domain_verified_for_one_org_cannot_be_claimed_or_verified_by_another(
    acme_sso, org_b, other_idp
):
    with pytest.raises(ValidationError) as claimed:
        sso.sso_config_save(
            actor=EVIL,
            org=org_b,
            idp_entity_id=other_idp.entity_id,
            idp_sso_url=other_idp.sso_url,
            idp_x509_cert=other_idp.cert,
            email_domains=["ACME.test"],
        )
    message = " ".join(claimed.value.messages)
    assert "verified for another organization" in message
    assert "acme" not in message.replace("acme.test", "").lower()  # not which one
    with pytest.raises(ValidationError, match="verified for another organization"):
        sso.sso_domains_verify(actor=EVIL, org=org_b, domains=["acme.test"])
    assert SSODomain.objects.get(domain="acme.test").org == acme_sso.org
    assert not AuditLog.objects.filter(action="sso.domain_verify", org=org_b).exists()


def test_a_claim_does_nothing_until_verified_and_the_page_says_so(alice_client, idp, org_a):
    form = {
        "preset": "okta",
        "metadata_xml": idp.metadata(),
        "email_domains": "acme.test",
        "group_roles": "Engineering = member",
        "session_hours": 8,
        "enabled": "on",
    }
    assert alice_client.post("/o/acme/settings/sso/", form).status_code == 302
    assert not SSODomain.objects.exists()
    page = alice_client.get("/o/acme/settings/sso/").content.decode()
    assert "waiting for a platform admin to verify it" in page and 'id="sso-domains-why"' in page
    client = Client()
    xml = idp.signed_response(
        sp_entity_id="http://testserver/sso/acme/metadata/",
        acs_url="http://testserver/sso/acme/acs/",
        in_response_to=start(client),
        name_id="dana@acme.test",
        attributes={GROUPS: ["Engineering"]},
    )
    response = post(client, xml)
    assert response.status_code == 403 and b"not verified" in response.content
    assert not User.objects.filter(email="dana@acme.test").exists()
    # Discovery routes only verified domains.
    assert Client().post("/sso/", {"email": "dana@acme.test"}).status_code == 200
    verify_domains(org_a, "acme.test")
    assert Client().post("/sso/", {"email": "dana@acme.test"})["Location"] == "/sso/acme/login/"
    page = alice_client.get("/o/acme/settings/sso/").content.decode()
    assert "<strong>verified</strong>" in page
    client = Client()
    xml = idp.signed_response(
        sp_entity_id="http://testserver/sso/acme/metadata/",
        acs_url="http://testserver/sso/acme/acs/",
        in_response_to=start(client),
        name_id="dana@acme.test",
        attributes={GROUPS: ["Engineering"]},
    )
    assert post(client, xml).status_code == 302 and signed_in_as(client) == "dana@acme.test"


def test_platform_admins_verify_domains_in_the_django_admin_audited(
    admin_client, org_a, org_b, alice, idp, other_idp
):
    config = sso.sso_config_save(
        actor=EVIL,
        org=org_a,
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
    )
    from .test_admin_services import _post_change, _refused

    url = f"/admin/orgs/ssoconfig/{config.pk}/change/"
    assert _post_change(admin_client, url, verified_domains="acme.test").status_code == 302
    assert list(SSODomain.objects.values_list("org__slug", "domain")) == [("acme", "acme.test")]
    row = AuditLog.objects.get(action="sso.domain_verify")
    assert row.via == "admin" and row.org == org_a
    assert row.changes["after"] == {"verified_domains": ["acme.test"]}
    # A second org cannot have it, through the form or the list action.
    globex = sso.sso_config_save(
        actor=EVIL,
        org=org_b,
        idp_entity_id=other_idp.entity_id,
        idp_sso_url=other_idp.sso_url,
        idp_x509_cert=other_idp.cert,
        email_domains=["globex.test"],
    )
    other = f"/admin/orgs/ssoconfig/{globex.pk}/change/"
    response = _post_change(admin_client, other, verified_domains="acme.test globex.test")
    _refused(response, admin_client, "verified for another organization")
    assert not SSODomain.objects.filter(org=org_b).exists()
    response = admin_client.post(
        "/admin/orgs/ssoconfig/",
        {"action": "verify_listed_domains", "_selected_action": [globex.pk]},
    )
    assert response.status_code == 302
    assert SSODomain.objects.get(org=org_b).domain == "globex.test"
    # Taking verification back is audited too.
    assert _post_change(admin_client, url, verified_domains="").status_code == 302
    assert not SSODomain.objects.filter(org=org_a).exists()
    assert AuditLog.objects.get(action="sso.domain_unverify").via == "admin"


def test_apply_config_verifies_the_domains_in_the_file_audited(org_a, org_b, alice, idp):
    spec = {
        "idp_entity_id": idp.entity_id,
        "idp_sso_url": idp.sso_url,
        "idp_x509_cert": idp.cert,
        "email_domains": ["acme.test"],
    }
    data = {"orgs": [{"slug": "acme", "sso": spec}]}
    config_apply(actor=Actor(via="apply_config"), data=data)
    assert sso.sign_in_domains(org_a.sso) == {"acme.test"}
    row = AuditLog.objects.get(action="sso.domain_verify")
    assert row.via == "apply_config" and row.changes["after"]["verified_domains"] == ["acme.test"]
    config_apply(actor=Actor(via="apply_config"), data=data)  # idempotent
    assert AuditLog.objects.filter(action="sso.domain_verify").count() == 1
    data = {"orgs": [{"slug": "globex", "sso": spec}]}
    with pytest.raises(Exception, match="verified for another organization"):
        config_apply(actor=Actor(via="apply_config"), data=data)


def test_in_trust_mode_an_org_admins_claim_is_verified(alice_client, idp, org_a, settings):
    settings.SSO_DOMAIN_VERIFICATION = "trust"
    form = {
        "preset": "okta",
        "metadata_xml": idp.metadata(),
        "email_domains": "acme.test",
        "session_hours": 8,
        "enabled": "on",
    }
    assert alice_client.post("/o/acme/settings/sso/", form).status_code == 302
    assert SSODomain.objects.get().org == org_a
    row = AuditLog.objects.get(action="sso.domain_verify")
    assert row.actor_label == "alice@acme.test"
    page = alice_client.get("/o/acme/settings/sso/").content.decode()
    assert "trusts its organization admins" in page and "<strong>verified</strong>" in page


def test_in_trust_mode_a_domain_verified_elsewhere_is_still_refused(
    acme_sso, org_b, other_idp, settings
):
    settings.SSO_DOMAIN_VERIFICATION = "trust"
    with pytest.raises(ValidationError, match="verified for another organization"):
        sso.sso_config_save(
            actor=EVIL,
            org=org_b,
            idp_entity_id=other_idp.entity_id,
            idp_sso_url=other_idp.sso_url,
            idp_x509_cert=other_idp.cert,
            email_domains=["acme.test"],
        )


def test_a_verified_domain_signs_in_its_users_existing_account_with_their_other_orgs(
    acme_sso, idp, org_b, bob
):
    # Documented (docs/sso.md): the org that owns the domain owns its mailboxes.
    services.membership_add(actor=EVIL, org=org_b, user=bob, role="viewer")
    client = Client()
    xml = idp.signed_response(
        sp_entity_id="http://testserver/sso/acme/metadata/",
        acs_url="http://testserver/sso/acme/acs/",
        in_response_to=start(client),
        name_id="bob@acme.test",
        attributes={GROUPS: ["Engineering"]},
    )
    assert post(client, xml).status_code == 302 and signed_in_as(client) == "bob@acme.test"
    assert client.get("/o/globex/").status_code == 200


def test_an_unverified_claim_does_not_keep_the_owner_from_claiming_its_domain(
    evil_sso, org_a, alice, idp
):
    config = sso.sso_config_save(
        actor=EVIL,
        org=org_a,
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
    )
    verify_domains(org_a, "acme.test")
    assert sso.sign_in_domains(config) == {"acme.test"}
    assert sso.sign_in_domains(evil_sso) == set()
    assert sso.config_for_email("alice@acme.test") == config
