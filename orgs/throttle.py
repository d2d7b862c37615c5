"""Sign-in throttling: failed password checks through django-axes, the password-reset and
invitation endpoints through django-ratelimit (docs/security.md, "Sign-in"); the management
API's requests per user and minute through DRF's throttling (ApiUserThrottle).

Axes counts failures in the database, so every process and replica sees the same counts;
django-ratelimit counts requests in the cache (Redis when set). Both see the client through
`client_address`, which reads it through our trusted proxies. The invitation emails a user
or an org sends are counted in the audit log (the database), like the sign-in failures."""

import ipaddress
import logging
import math
from datetime import timedelta

from asgiref.sync import sync_to_async
from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.shortcuts import render
from django.utils import timezone
from django_ratelimit.core import get_usage
from rest_framework.throttling import UserRateThrottle

from core.client_ip import client_ip

from .models import AuditLog, Organization, User

log = logging.getLogger(__name__)


def client_address(request) -> str | None:
    """The client's address as counted by the limits: an IPv6 client is its /64, the block one
    subscriber gets, so it cannot rotate through its own addresses to start afresh. An IPv4
    address in IPv6 form (`::ffff:a.b.c.d`) is that IPv4 client, never the /64 `::` that
    every such address shares."""
    ip = client_ip(request)
    try:
        parsed = ipaddress.ip_address(ip) if ip else None
    except ValueError:  # not an address (a test client, a unix socket): counted as it is
        return ip
    if parsed is None:
        return ip
    if parsed.version == 6 and parsed.ipv4_mapped:
        return str(parsed.ipv4_mapped)
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False).network_address)
    return str(parsed)


def login_username(request, credentials) -> str | None:
    """The account a sign-in attempt is counted against: the email as typed, trimmed and
    lower-cased (emails are stored lower-case), whether or not such a user exists."""
    value = (credentials or {}).get("username")
    if value is None:
        value = request.POST.get("username") if request is not None else None
    return value.strip().lower() if isinstance(value, str) else value


class LoginThrottleBackend(AxesStandaloneBackend):
    """First in AUTHENTICATION_BACKENDS: refuses every password check, right or wrong, while
    the account or the client address is locked out. A caller without a request (a shell,
    the test client's login()) has no client to count and is let through to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    async def aauthenticate(self, request, **credentials):
        # No get_user() on purpose: sessions name PasswordBackend, which loads their user.
        return await sync_to_async(self.authenticate)(request, **credentials)


class LoginThrottleHandler(AxesDatabaseHandler):
    """Axes' database handler with a limit of its own for each lockout parameter:
    LOGIN_FAILURES_PER_ACCOUNT per account, LOGIN_FAILURES_PER_ADDRESS per client address."""

    def get_failures(self, request, credentials=None) -> int:
        # AXES_LOCKOUT_PARAMETERS is ["username", "ip_address"]: one queryset each, in order.
        account, address = (
            qs.aggregate(n=Sum("failures_since_start"))["n"] or 0
            for qs in self.get_user_attempts(request, credentials)
        )
        # Axes compares one number with AXES_FAILURE_LIMIT (= the per-account limit), so the
        # address count is scaled to it: address * A // B >= A exactly when address >= B.
        per_account = settings.LOGIN_FAILURES_PER_ACCOUNT
        return max(account, address * per_account // settings.LOGIN_FAILURES_PER_ADDRESS)

    def reset_user_attempts(self, request, credentials=None) -> int:
        # A successful sign-in clears that account's failures only. Axes would also clear the
        # address's, which would let a client with one account of its own wipe its address
        # count by signing in between guesses at other accounts.
        username = login_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(username=username).delete()
        return count


def lockout_response(request, *_args):
    """The answer to a locked-out sign-in (axes' AXES_LOCKOUT_CALLABLE). The same words for a
    locked account and a locked address, and for accounts that do not exist."""
    return throttled_response(request, settings.LOGIN_COOLOFF_MINUTES * 60)


def throttled_response(request, retry_after: int):
    minutes = max(1, -(-retry_after // 60))
    response = render(request, "registration/throttled.html", {"minutes": minutes}, status=429)
    response["Retry-After"] = str(max(1, retry_after))
    return response


def retry_after(request, group: str, value: str | None, per_hour: int) -> int:
    """Count this request against `value` (a client address, an email, a token) in `group` and
    return how many seconds to wait if that spends the allowance of `per_hour` (0 when it does
    not). The value is hashed into the cache key, never stored as is. 0 per hour turns the
    limit off; a cache that is down lets the request through, as the SSO limit does."""
    if not per_hour:
        return 0
    try:
        usage = get_usage(
            request,
            group=group,
            key=lambda _group, _request: value or "",
            rate=f"{per_hour}/h",
            increment=True,
        )
    except Exception:  # a dead cache never blocks these pages
        log.warning("throttle: the rate-limit cache is unavailable; allowing %s", group)
        return 0
    if usage is None or not usage["should_limit"]:
        return 0
    return max(1, usage["time_left"])


def refusal(request, *limits: tuple[str, str | None, int]):
    """The 429 page if one of these limits, each (group, value, per_hour) and counted in order
    until one is spent, refuses this request; None when all allow it."""
    for group, value, per_hour in limits:
        wait = retry_after(request, group, value, per_hour)
        if wait:
            return throttled_response(request, wait)
    return None


def _wait_text(wait: int) -> str:
    minutes = max(1, -(-wait // 60))
    return f"try again in {minutes} minute{'s' if minutes != 1 else ''}."


def _invitations(n: int) -> str:
    return f"{n} invitation{'s' if n != 1 else ''}"


# Every invitation email sent writes one of these audit rows (the services), whichever way
# in sent it: the sends limits count them, so they hold across restarts, processes and
# replicas, with or without Redis.
SEND_ACTIONS = ("invitation.create", "invitation.resend")
SEND_WINDOW = timedelta(hours=1)


def _sends_wait(rows, limit: int) -> int:
    """Seconds until fewer than ``limit`` of these audit rows are under an hour old (the
    oldest of the newest ``limit`` leaves the window first); 0 when that is already so."""
    if not limit:
        return 0
    now = timezone.now()
    newest = list(
        rows.filter(created_at__gt=now - SEND_WINDOW)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(newest) < limit:
        return 0
    return max(1, math.ceil((newest[-1] + SEND_WINDOW - now).total_seconds()))


def _hold_sends(user_pk, org_pk) -> None:
    """Lock the sender's and the org's rows (in that order, always) until the transaction
    ends: a concurrent send by the same user or in the same org, in any process, waits for
    this one to be counted, so two cannot both take the last one. (SQLite's IMMEDIATE
    transactions already let one writer in at a time.)"""
    list(User.objects.select_for_update().filter(pk=user_pk).values_list("pk"))
    list(Organization.objects.select_for_update().filter(pk=org_pk).values_list("pk"))


def invitation_send_refusal(request, org) -> tuple[int, str] | None:
    """Seconds to wait and why, when sending an invitation email (a new invitation or a
    resend) in ``org`` is refused; None if not. INVITATION_SENDS_PER_USER_PER_HOUR sends by
    the signed-in user (across orgs: a token counts as its user), then
    INVITATION_SENDS_PER_ORG_PER_HOUR sends in the org (every way in together), counted in
    the last hour of the audit log; 0 turns a limit off. Without them a compromised admin
    session or token could send invitation emails without end.

    Call it inside the transaction that sends (transaction.atomic around it and the
    service): it holds the user's and the org's rows until that commits."""
    _hold_sends(request.user.pk, org.pk)
    return _send_refusal(request, org)


def _send_refusal(request, org) -> tuple[int, str] | None:
    sends = AuditLog.objects.filter(action__in=SEND_ACTIONS)
    per_user = settings.INVITATION_SENDS_PER_USER_PER_HOUR
    wait = _sends_wait(sends.filter(actor_id=request.user.pk), per_user)
    if wait:
        return wait, f"You sent {_invitations(per_user)} in the last hour; {_wait_text(wait)}"
    per_org = settings.INVITATION_SENDS_PER_ORG_PER_HOUR
    wait = _sends_wait(sends.filter(org_id=org.pk), per_org)
    if wait:
        return wait, f"{org.name} sent {_invitations(per_org)} in the last hour; {_wait_text(wait)}"
    return None


def invitation_resend_refusal(request, invitation) -> tuple[int, str] | None:
    """Seconds to wait and why, when this resend of ``invitation`` is refused (each one
    emails its address: a button pressed in a loop would flood the inbox); None if not.
    INVITATION_RESEND_PER_HOUR resends per invitation and hour, counted in the audit log (0
    turns it off); then the sends of the user and the org (invitation_send_refusal). Call
    it inside the transaction that resends, as invitation_send_refusal."""
    _hold_sends(request.user.pk, invitation.org_id)
    per_hour = settings.INVITATION_RESEND_PER_HOUR
    resends = AuditLog.objects.filter(
        org_id=invitation.org_id,
        action="invitation.resend",
        target_type="invitation",
        target_id=str(invitation.pk),
    )
    wait = _sends_wait(resends, per_hour)
    if wait:
        return wait, (
            f"The invitation for {invitation.email} was sent again {per_hour} times in the "
            f"last hour; {_wait_text(wait)}"
        )
    return _send_refusal(request, invitation.org)


class ApiUserThrottle(UserRateThrottle):
    """The management API (/api/…, DRF): at most API_REQUESTS_PER_MINUTE requests per user
    (a personal access token counts as its user) and minute, counted in the cache, so one
    token cannot hold the database with analytics and exports; past it a 429 with
    Retry-After. 0 turns it off; a cache that is down lets requests through."""

    def get_rate(self):
        per_minute = settings.API_REQUESTS_PER_MINUTE
        return f"{per_minute}/min" if per_minute else None

    def get_cache_key(self, request, view):
        key = super().get_cache_key(request, view)
        return key and getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:") + key

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception:  # a dead cache never blocks the API
            log.warning("throttle: the rate-limit cache is unavailable; allowing an API request")
            return True
