"""Sign-in throttling: wrong passwords lock an account or a client address out for a while
(django-axes); password reset and invitation links are rate-limited (django-ratelimit)."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django.utils.http import urlsafe_base64_encode

from conftest import PASSWORD, SETUP
from orgs import services
from orgs.models import User

pytestmark = pytest.mark.django_db

HOME = "198.51.100.7"  # the client's address in these tests (TEST-NET-2: not one of our proxies)
PROXY = "10.0.0.2"  # a load balancer of ours (in TRUSTED_PROXIES)


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = settings.AXES_FAILURE_LIMIT = 5
    settings.LOGIN_FAILURES_PER_ADDRESS = 20
    settings.LOGIN_COOLOFF_MINUTES = 15
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.PASSWORD_RESET_EMAIL_PER_HOUR = 5
    settings.PASSWORD_RESET_ADDRESS_PER_HOUR = 20
    settings.INVITATION_ADDRESS_PER_HOUR = 30
    settings.INVITATION_TOKEN_PER_HOUR = 10


def sign_in(client, email, password, ip=HOME, path="/login/", **headers):
    return client.post(path, {"username": email, "password": password}, REMOTE_ADDR=ip, **headers)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_it_refuses_even_the_right_password_after_five_wrong_ones(alice):
    client = Client()
    answers = [sign_in(client, "alice@acme.test", f"guess-{n}") for n in range(40)]
    assert [r.status_code for r in answers[:4]] == [200] * 4
    assert all(b"correct email and password" in r.content for r in answers[:4])
    # The fifth failure locks the account; every later try, right or wrong, gets the same page.
    assert {r.status_code for r in answers[4:]} == {429}
    assert b"Too many attempts" in answers[-1].content
    assert answers[-1]["Retry-After"] == str(15 * 60)
    response = sign_in(client, "alice@acme.test", PASSWORD)
    assert response.status_code == 429 and not signed_in(client)
    # Case and spaces make no new account to guess at.
    assert sign_in(Client(), " ALICE@acme.test ", PASSWORD, ip="203.0.113.9").status_code == 429


def test_the_lockout_ends_after_the_cool_off(alice):
    for n in range(5):
        sign_in(Client(), "alice@acme.test", f"guess-{n}")
    assert sign_in(Client(), "alice@acme.test", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    client = Client()
    assert sign_in(client, "alice@acme.test", PASSWORD).status_code == 302 and signed_in(client)


def test_a_successful_sign_in_clears_the_accounts_count(alice):
    for n in range(4):
        assert sign_in(Client(), "alice@acme.test", f"guess-{n}").status_code == 200
    assert sign_in(Client(), "alice@acme.test", PASSWORD).status_code == 302
    for n in range(4):
        assert sign_in(Client(), "alice@acme.test", f"again-{n}").status_code == 200
    assert sign_in(Client(), "alice@acme.test", PASSWORD).status_code == 302


def test_an_address_is_locked_out_after_failures_across_many_accounts(alice, charlie):
    for n in range(20):  # a few tries at each of many accounts, known or not
        response = sign_in(Client(), f"user{n // 4}@acme.test", "guess")
    assert response.status_code == 429
    assert sign_in(Client(), "alice@acme.test", PASSWORD).status_code == 429
    # Another client is not held up by it.
    assert sign_in(Client(), "alice@acme.test", PASSWORD, ip="203.0.113.9").status_code == 302


def test_signing_in_to_an_own_account_does_not_clear_the_address_count(alice, bob):
    for n in range(19):
        sign_in(Client(), f"victim{n // 4}@acme.test", "guess")
    assert sign_in(Client(), "bob@acme.test", PASSWORD).status_code == 302
    assert sign_in(Client(), "victim9@acme.test", "guess").status_code == 429


def test_an_account_is_locked_out_after_failures_from_many_addresses(alice):
    for n in range(5):
        sign_in(Client(), "alice@acme.test", "guess", ip=f"203.0.113.{n + 1}")
    assert sign_in(Client(), "alice@acme.test", PASSWORD, ip="192.0.2.50").status_code == 429


def test_an_ipv6_client_cannot_rotate_through_its_own_block(alice):
    for n in range(20):
        sign_in(Client(), f"user{n // 4}@acme.test", "guess", ip=f"2001:db8:1:2::{n + 1:x}")
    response = sign_in(Client(), "alice@acme.test", PASSWORD, ip="2001:db8:1:2::ffff")
    assert response.status_code == 429


def test_a_spoofed_forwarded_for_header_does_not_dodge_the_limit(settings, alice):
    settings.BEHIND_PROXY = True
    # The client writes whatever it likes; our proxy appends the address it really saw.
    for n in range(20):
        xff = f"192.0.2.{n}, {HOME}"
        response = sign_in(
            Client(), f"user{n // 4}@acme.test", "guess", ip=PROXY, HTTP_X_FORWARDED_FOR=xff
        )
    assert response.status_code == 429
    fresh_lie = f"192.0.2.200, {HOME}"
    response = sign_in(
        Client(), "alice@acme.test", PASSWORD, ip=PROXY, HTTP_X_FORWARDED_FOR=fresh_lie
    )
    assert response.status_code == 429
    # Another real client behind the same proxy is counted apart.
    client = Client()
    response = sign_in(
        client, "alice@acme.test", PASSWORD, ip=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.9"
    )
    assert response.status_code == 302 and signed_in(client)


def test_the_admin_login_is_throttled_too(alice):
    root = User.objects.create_superuser(email="root@bonito.test", password=PASSWORD)
    for n in range(5):
        sign_in(Client(), root.email, f"guess-{n}", path="/admin/login/")
    client = Client()
    response = sign_in(client, root.email, PASSWORD, path="/admin/login/")
    assert response.status_code == 429 and not signed_in(client)
    # Failures at the admin and at the sign-in page add up: it is one account.
    assert sign_in(Client(), root.email, PASSWORD).status_code == 429


def test_platform_admins_see_and_clear_lockouts(alice):
    for n in range(5):
        sign_in(Client(), "alice@acme.test", f"guess-{n}")
    admin = Client()
    admin.force_login(User.objects.create_superuser(email="root@bonito.test", password=PASSWORD))
    page = admin.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and b"alice@acme.test" in page.content
    call_command("axes_reset_username", "alice@acme.test")
    assert sign_in(Client(), "alice@acme.test", PASSWORD).status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_the_lockout_page_is_served_under_asgi(alice):
    # make run and make serve run Django under ASGI: the lockout goes through the async path.
    from django.test import AsyncClient

    client = AsyncClient()
    for n in range(5):
        await client.post("/login/", {"username": "alice@acme.test", "password": f"g{n}"})
    response = await client.post("/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many attempts" in response.content


# ------------------------------------------------------------------------------ password reset
def reset(email, ip=HOME, **headers):
    return Client().post("/password-reset/", {"email": email}, REMOTE_ADDR=ip, **headers)


def test_password_reset_is_limited_per_email_alike_for_known_and_unknown(alice):
    for email in ("alice@acme.test", "nobody@acme.test"):
        answers = [reset(email, ip=f"203.0.113.{n + 1}") for n in range(6)]
        assert [r.status_code for r in answers] == [302] * 5 + [429]
        assert reset(email.upper(), ip="192.0.2.77").status_code == 429
    assert len(mail.outbox) == 5  # alice's five; nothing tells the two apart but her inbox


def test_password_reset_is_limited_per_address(alice):
    answers = [reset(f"someone{n}@acme.test") for n in range(21)]
    assert [r.status_code for r in answers] == [302] * 20 + [429]
    assert reset("alice@acme.test").status_code == 429
    assert reset("alice@acme.test", ip="203.0.113.9").status_code == 302


def test_password_reset_counts_the_real_client_behind_the_proxy(settings, alice):
    settings.BEHIND_PROXY = True
    for n in range(20):
        reset(f"someone{n}@acme.test", ip=PROXY, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, {HOME}")
    lie = f"192.0.2.250, {HOME}"
    assert reset("other@acme.test", ip=PROXY, HTTP_X_FORWARDED_FOR=lie).status_code == 429
    other = "203.0.113.9"
    assert reset("other@acme.test", ip=PROXY, HTTP_X_FORWARDED_FOR=other).status_code == 302


def test_reset_links_are_limited_per_address(alice):
    client = Client()
    answers = [client.get(f"/password-reset/MQ/guess-{n}/", REMOTE_ADDR=HOME) for n in range(21)]
    assert [r.status_code for r in answers] == [200] * 20 + [429]  # 200: "cannot be used"
    assert b"cannot be used" in answers[0].content


def test_reset_links_are_limited_per_account(alice):
    answers = [
        Client().get(f"/password-reset/MQ/guess-{n}/", REMOTE_ADDR=f"203.0.113.{n + 1}")
        for n in range(21)
    ]
    assert answers[-1].status_code == 429


def test_reset_links_are_limited_per_account_whatever_the_uid_spelling(alice, bob):
    # Django reads the uid as base64 of the pk: "04", "+4", " 4", "004" all name the same user.
    spellings = [f"{pad}{alice.pk}" for pad in ("", "0", "00", "+", " ", "+0", " 0", "000")]
    uids = [urlsafe_base64_encode(s.encode()) for s in spellings]
    assert len(set(uids)) == len(uids)
    answers = [
        Client().get(
            f"/password-reset/{uids[n % len(uids)]}/guess-{n}/", REMOTE_ADDR=f"203.0.113.{n + 1}"
        )
        for n in range(21)
    ]
    assert [r.status_code for r in answers] == [200] * 20 + [429]
    # Another account is not held up by it.
    uid = urlsafe_base64_encode(str(bob.pk).encode())
    assert Client().get(f"/password-reset/{uid}/guess/", REMOTE_ADDR="192.0.2.9").status_code == 200


def test_reset_links_with_an_undecodable_uid_are_limited_too(alice):
    answers = [
        Client().get(f"/password-reset/_w/guess-{n}/", REMOTE_ADDR=f"203.0.113.{n + 1}")
        for n in range(21)
    ]
    assert [r.status_code for r in answers] == [200] * 20 + [429]


# ------------------------------------------------------------------------------ invitations
def test_invitation_links_are_limited_per_address(org_a, alice):
    _inv, token = services.invitation_create(
        actor=SETUP, org=org_a, email="newbie@acme.test", role="member"
    )
    client = Client()
    answers = [client.get(f"/invite/guess-{n}/", REMOTE_ADDR=HOME) for n in range(31)]
    assert [r.status_code for r in answers] == [410] * 30 + [429]
    # Even the real token is held back for that address, not for others.
    assert client.get(f"/invite/{token}/", REMOTE_ADDR=HOME).status_code == 429
    assert Client().get(f"/invite/{token}/", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_an_invitation_link_is_limited_per_token(org_a, alice):
    _inv, token = services.invitation_create(
        actor=SETUP, org=org_a, email="newbie@acme.test", role="member"
    )
    answers = [
        Client().post(f"/invite/{token}/", {"password": "short"}, REMOTE_ADDR=f"203.0.113.{n + 1}")
        for n in range(11)
    ]
    assert [r.status_code for r in answers] == [200] * 10 + [429]


def test_invitation_limits_count_the_real_client_behind_the_proxy(settings, org_a, alice):
    settings.BEHIND_PROXY = True
    for n in range(30):
        Client().get(
            f"/invite/guess-{n}/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, {HOME}"
        )
    lie = f"192.0.2.250, {HOME}"
    assert (
        Client().get("/invite/x/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=lie).status_code == 429
    )
    other = "203.0.113.9"
    assert (
        Client().get("/invite/x/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=other).status_code == 410
    )


@pytest.mark.parametrize("behind_proxy", [True, False])
def test_ipv4_clients_in_ipv6_form_are_counted_apart(settings, alice, bob, behind_proxy):
    # A proxy or a dual-stack socket may write IPv4 clients as ::ffff:a.b.c.d; they all share
    # the IPv6 /64 "::", so grouping them as IPv6 would make every IPv4 client one address.
    settings.BEHIND_PROXY = behind_proxy

    def attempt(email, password, client_v4):
        mapped = f"::ffff:{client_v4}"
        if behind_proxy:
            return sign_in(Client(), email, password, ip=PROXY, HTTP_X_FORWARDED_FOR=mapped)
        return sign_in(Client(), email, password, ip=mapped)

    for n in range(20):
        attempt(f"user{n // 4}@acme.test", "guess", f"203.0.113.{n + 1}")
    assert attempt("alice@acme.test", PASSWORD, "198.51.100.9").status_code == 302
    # ... and one such client is still counted as itself, in either form.
    for n in range(20):
        attempt(f"other{n // 4}@acme.test", "guess", HOME)
    assert attempt("bob@acme.test", PASSWORD, HOME).status_code == 429
    assert sign_in(Client(), "bob@acme.test", PASSWORD, ip=HOME).status_code == 429


def test_a_trusted_proxy_in_ipv6_form_is_trusted(settings, alice):
    settings.BEHIND_PROXY = True
    for n in range(20):
        sign_in(
            Client(),
            f"user{n // 4}@acme.test",
            "guess",
            ip=f"::ffff:{PROXY}",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}",
        )
    client = Client()
    response = sign_in(
        client, "alice@acme.test", PASSWORD, ip=f"::ffff:{PROXY}", HTTP_X_FORWARDED_FOR=HOME
    )
    assert response.status_code == 302 and signed_in(client)
