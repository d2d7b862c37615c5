"""`bonito doctor`: each check on one pass/fail line, with a hint when it fails."""

import ipaddress
import time
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import click
import httpx

from .client import (
    FAILURE,
    Client,
    CliError,
    http_client,
    me_of,
    scheme_hint,
    server_url,
    shown_url,
)
from .output import print_json, safe

MAX_SKEW_S = 60


@dataclass
class Check:
    check: str
    status: str  # pass, fail or skip
    detail: str
    hint: str = ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


AFTER_REACHABLE = ("token valid", "org access", "providers", "/v1 request", "clock skew")
ADMIN_ROLES = ("admin", "owner")


def run_checks(state):
    """The checks, each yielded as soon as it is known (doctor prints it at once)."""
    url = server_url(state.profile.url)
    shown = shown_url(url)
    parts = urlsplit(url)

    # 1. reachable (and the server's clock, read from the same answer, at the same moment)
    skew = None
    try:
        with http_client(timeout=10) as probe:  # a wrong SSL_CERT_FILE: named, exit 2
            response = probe.get(url + "/api/health")
        if response.headers.get("date"):
            try:
                skew = time.time() - parsedate_to_datetime(response.headers["date"]).timestamp()
            except (TypeError, ValueError):
                skew = None
        kind = response.headers.get("content-type", "").split(";")[0]
        if 300 <= response.status_code < 400:
            ok, detail = (
                False,
                f"{shown} redirected to {shown_url(response.headers.get('location', '?'))}",
            )
            hint = "Use the server's final URL (e.g. https://) with --url or BONITO_URL."
        elif kind != "application/json":
            ok, detail = False, f"{shown} is not a Bonito API (got {kind or 'no content type'})"
            hint = "Is the URL the Bonito server's, not a proxy's or a web page's?"
        else:
            ok = response.status_code == 200
            detail = f"{shown} answered HTTP {response.status_code}"
            hint = (
                "" if ok else "The server answers but is not healthy: see its logs and /api/ready."
            )
        yield Check("server reachable", "pass" if ok else "fail", detail, hint)
        if not ok and kind != "application/json":
            for name in ("TLS", *AFTER_REACHABLE):
                yield Check(name, "skip", "not a Bonito API")
            return
    except httpx.ConnectError as exc:
        wrong_scheme = scheme_hint(url, exc)
        tls = not wrong_scheme and ("SSL" in str(exc) or "certificate" in str(exc).lower())
        yield Check(
            "server reachable",
            "fail" if not tls else "pass",
            f"{shown}: {exc}" if not tls else f"{shown} answered",
            ""
            if tls
            else wrong_scheme
            or "Is the server running, and is the URL right? (--url or BONITO_URL)",
        )
        if tls:
            yield Check(
                "TLS",
                "fail",
                str(exc),
                "The certificate is not trusted: fix the chain or the host name "
                "(a private CA: SSL_CERT_FILE=/path/ca.pem).",
            )
        else:
            yield Check("TLS", "skip", "server not reachable")
        for name in AFTER_REACHABLE:
            yield Check(name, "skip", "server not reachable")
        return
    except httpx.HTTPError as exc:
        yield Check(
            "server reachable",
            "fail",
            f"{shown}: {exc}",
            scheme_hint(url, exc) or "Is the URL right? (--url or BONITO_URL)",
        )
        for name in ("TLS", *AFTER_REACHABLE):
            yield Check(name, "skip", "server not reachable")
        return
    yield from _after_reachable(state, url, parts, skew)


def _after_reachable(state, url, parts, skew):
    # 2. TLS
    if parts.scheme == "https":
        yield Check("TLS", "pass", "certificate verified")
    elif _loopback(parts.hostname or ""):
        yield Check("TLS", "pass", "plain HTTP on loopback (nothing leaves this machine)")
    else:
        yield Check(
            "TLS",
            "fail",
            "plain HTTP: the token crosses the network in clear",
            "Serve Bonito behind HTTPS and log in with an https:// URL.",
        )

    # 3. token, 4. org
    me = None
    try:
        if state.profile.refused:
            raise CliError(state.profile.refused)
        client = Client(url, state.profile.token, timeout=20)
        me = me_of(client)
        yield Check("token valid", "pass", f"{me['email']} (token from {state.profile.source})")
    except CliError as exc:
        yield Check(
            "token valid",
            "fail",
            str(exc),
            "Create a token in Settings → Tokens and run `bonito auth login` (or set BONITO_TOKEN).",
        )
    if me is None:
        yield Check("org access", "skip", "no valid token")
    elif state.org and state.org != me["org"]["slug"]:
        yield Check(
            "org access",
            "fail",
            f"the token is for {me['org']['slug']}, not {state.org}",
            f"Log in with a token made in {state.org}.",
        )
    else:
        yield Check("org access", "pass", f"{me['org']['slug']} as {me['role']}")

    # 5. providers (testing one needs the admin role: others see a skip, not a failure)
    deployments = []
    if me is None:
        yield Check("providers", "skip", "no valid token")
        yield Check("/v1 request", "skip", "no valid token")
    else:
        admin = me["role"] in ADMIN_ROLES
        providers = None
        try:
            providers = [p for p in client.list("/api/gateway/providers") if p.get("is_active")]
            deployments = [d for d in client.list("/api/gateway/deployments") if d.get("is_active")]
        except CliError as exc:
            yield Check("providers", "fail", str(exc), "The token's role cannot read providers?")
        if providers == []:
            yield Check(
                "providers", "fail", "no active provider", "Add one: `bonito providers create …`."
            )
        elif providers and not admin:
            yield Check(
                "providers",
                "skip",
                f"{len(providers)} active; testing them needs the admin role "
                f"(this token is {me['role']})",
            )
        for p in (providers or []) if admin else []:
            name = p.get("name", p.get("id"))
            try:
                result = client.post(f"/api/gateway/providers/{p['id']}/test")
                yield Check(
                    f"provider {name}",
                    "pass" if result["ok"] else "fail",
                    str(result["detail"]),
                    ""
                    if result["ok"]
                    else "Check its credentials, api_base and network path "
                    "(`bonito providers get`, docs/gateway.md).",
                )
            except (CliError, KeyError, TypeError) as exc:
                yield Check(f"provider {name}", "fail", str(exc), "Run `bonito providers test`.")

        # 6. /v1 through a real key
        yield _v1_check(state, client, me, deployments)

    # 7. clock skew (measured from the first answer's Date header, when it came)
    if skew is None:
        yield Check("clock skew", "skip", "the server sent no Date header")
    else:
        ok = abs(skew) <= MAX_SKEW_S
        yield Check(
            "clock skew",
            "pass" if ok else "fail",
            f"{skew:+.0f}s from the server",
            "" if ok else "Sync this machine's clock (NTP): expiries and log times depend on it.",
        )


def _v1_check(state, client, me, deployments) -> Check:
    if not deployments:
        return Check("/v1 request", "skip", "no active deployment to call")
    model = deployments[0]["model_name"]
    key, temporary = state.profile.api_key, None
    if not key:
        if me is None:
            return Check("/v1 request", "skip", "no API key and no valid token to make one")
        if me["role"] not in ADMIN_ROLES:
            return Check(
                "/v1 request",
                "skip",
                f"no API key saved, and making a temporary one needs the admin role "
                f"(this token is {me['role']}): set BONITO_API_KEY",
            )
        try:
            temporary = client.post("/api/gateway/keys", {"name": "bonito doctor (temporary)"})
            key = temporary["api_key"]
        except CliError as exc:
            return Check(
                "/v1 request",
                "fail",
                f"could not make a temporary key: {exc}",
                "Pass a bn- key with BONITO_API_KEY.",
            )
    result = _v1_request(state, key, model, wait=temporary is not None)
    if temporary is not None:
        try:
            client.delete(f"/api/gateway/keys/{temporary['id']}")
        except CliError as exc:  # never leave a live key behind unsaid
            return Check(
                "/v1 request",
                "fail",
                f"{result.detail}; but its temporary key {temporary['id']} was not revoked: {exc}",
                f"Revoke it: bonito keys revoke {temporary['id']}",
            )
    return result


def _v1_request(state, key, model, wait: bool) -> Check:
    from .client import api_message

    try:
        # A new key reaches the gateways with the next config version (within seconds).
        deadline = time.monotonic() + (15 if wait else 0)
        while True:
            response = httpx.post(
                state.profile.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1,
                },
                timeout=60,
            )
            if response.status_code != 401 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    except httpx.HTTPError as exc:
        return Check("/v1 request", "fail", f"{model}: {exc}", "Is /v1 served on this URL?")
    if response.status_code == 200:
        return Check(
            "/v1 request",
            "pass",
            f"{model} answered in {response.elapsed.total_seconds() * 1000:.0f} ms",
        )
    return Check(
        "/v1 request",
        "fail",
        f"{model}: HTTP {response.status_code}: {api_message(response)}",
        "See `bonito logs --status error` and the provider checks above.",
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="The checks as a JSON list.")
@click.pass_context
def doctor(ctx, as_json):
    """Diagnose the setup, in order: server reachable, TLS, token valid, org access, each
    provider's test connection, a tiny /v1 request through a real key, clock skew.

    Without a saved API key (BONITO_API_KEY) the /v1 check makes a temporary key and
    revokes it right after. Exit 1 when any check fails.

    \b
    Examples:
      bonito doctor
      bonito doctor --json | jq '.[] | select(.status=="fail")'
    """
    from .main import State

    state = ctx.find_object(State)
    as_json = as_json or state.json
    marks = {"pass": ("green", "PASS"), "fail": ("red", "FAIL"), "skip": ("yellow", "SKIP")}
    checks = []
    try:
        for c in run_checks(state):
            if c.status != "fail":
                c.hint = ""  # a hint is for what failed
            c.detail, c.hint = safe(c.detail), safe(c.hint)
            checks.append(c)
            if as_json:
                continue
            # Each line as soon as its check ends: a slow provider test is visible as such.
            color, word = marks[c.status]
            if not state.quiet or c.status == "fail":
                click.echo(click.style(word, fg=color) + f"  {safe(c.check)}: {c.detail}")
                if c.hint:
                    click.echo(f"      hint: {c.hint}")
    except CliError as exc:
        checks.append(Check("doctor", "fail", safe(str(exc))))
        if not as_json:
            click.echo(click.style("FAIL", fg="red") + f"  {checks[-1].detail}")
    if as_json:
        print_json([asdict(c) for c in checks])
    if any(c.status == "fail" for c in checks):
        ctx.exit(FAILURE)
