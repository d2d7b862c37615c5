"""`bonito doctor`: each check on one pass/fail line, with a hint when it fails."""

import ipaddress
import time
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import click
import httpx

from .client import FAILURE, Client, CliError
from .output import print_json

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


def run_checks(state) -> list[Check]:
    url = state.profile.url
    checks: list[Check] = []
    add = checks.append
    parts = urlsplit(url)

    # 1. reachable (and the server's clock, read from the same answer)
    server_date = None
    try:
        response = httpx.get(url + "/api/health", timeout=10)
        server_date = response.headers.get("date")
        ok = response.status_code == 200
        add(
            Check(
                "server reachable",
                "pass" if ok else "fail",
                f"{url} answered HTTP {response.status_code}",
                "" if ok else "The server answers but is not healthy: see its logs and /api/ready.",
            )
        )
    except httpx.ConnectError as exc:
        tls = "SSL" in str(exc) or "certificate" in str(exc).lower()
        add(
            Check(
                "server reachable",
                "fail" if not tls else "pass",
                f"{url}: {exc}" if not tls else f"{url} answered",
                "Is the server running, and is the URL right? (--url or BONITO_URL)",
            )
        )
        if tls:
            add(
                Check(
                    "TLS",
                    "fail",
                    str(exc),
                    "The certificate is not trusted: fix the chain or the host name.",
                )
            )
        return checks + [
            Check(name, "skip", "server not reachable")
            for name in ("token valid", "org access", "providers", "/v1 request", "clock skew")
        ]
    except httpx.HTTPError as exc:
        add(
            Check(
                "server reachable",
                "fail",
                f"{url}: {exc}",
                "Is the URL right? (--url or BONITO_URL)",
            )
        )
        return checks

    # 2. TLS
    if parts.scheme == "https":
        add(Check("TLS", "pass", "certificate verified"))
    elif _loopback(parts.hostname or ""):
        add(Check("TLS", "pass", "plain HTTP on loopback (nothing leaves this machine)"))
    else:
        add(
            Check(
                "TLS",
                "fail",
                "plain HTTP: the token crosses the network in clear",
                "Serve Bonito behind HTTPS and log in with an https:// URL.",
            )
        )

    # 3. token, 4. org
    client = Client(url, state.profile.token, timeout=20)
    me = None
    try:
        me = client.get("/api/me")
        add(Check("token valid", "pass", f"{me['email']} (token from {state.profile.source})"))
    except CliError as exc:
        add(
            Check(
                "token valid",
                "fail",
                str(exc),
                "Create a token in Settings → Tokens and run `bonito auth login` (or set BONITO_TOKEN).",
            )
        )
    if me is None:
        add(Check("org access", "skip", "no valid token"))
    elif state.org and state.org != me["org"]["slug"]:
        add(
            Check(
                "org access",
                "fail",
                f"the token is for {me['org']['slug']}, not {state.org}",
                f"Log in with a token made in {state.org}.",
            )
        )
    else:
        add(Check("org access", "pass", f"{me['org']['slug']} as {me['role']}"))

    # 5. providers
    deployments = []
    if me is None:
        add(Check("providers", "skip", "no valid token"))
    else:
        try:
            providers = [p for p in client.list("/api/gateway/providers") if p["is_active"]]
            deployments = [d for d in client.list("/api/gateway/deployments") if d["is_active"]]
        except CliError as exc:
            providers = None
            add(Check("providers", "fail", str(exc), "The token's role cannot read providers?"))
        if providers == []:
            add(
                Check(
                    "providers",
                    "fail",
                    "no active provider",
                    "Add one: `bonito providers create …`.",
                )
            )
        for p in providers or []:
            try:
                result = client.post(f"/api/gateway/providers/{p['id']}/test")
                add(
                    Check(
                        f"provider {p['name']}",
                        "pass" if result["ok"] else "fail",
                        result["detail"],
                        ""
                        if result["ok"]
                        else "Check its credentials, api_base and network path "
                        "(`bonito providers get`, docs/gateway.md).",
                    )
                )
            except CliError as exc:
                add(
                    Check(
                        f"provider {p['name']}", "fail", str(exc), "Testing needs the admin role."
                    )
                )

    # 6. /v1 through a real key
    add(_v1_check(state, client, me, deployments))

    # 7. clock skew
    if server_date:
        skew = time.time() - parsedate_to_datetime(server_date).timestamp()
        ok = abs(skew) <= MAX_SKEW_S
        add(
            Check(
                "clock skew",
                "pass" if ok else "fail",
                f"{skew:+.0f}s from the server",
                ""
                if ok
                else "Sync this machine's clock (NTP): expiries and log times depend on it.",
            )
        )
    else:
        add(Check("clock skew", "skip", "the server sent no Date header"))
    return checks


def _v1_check(state, client, me, deployments) -> Check:
    if not deployments:
        return Check("/v1 request", "skip", "no active deployment to call")
    model = deployments[0]["model_name"]
    key, temporary = state.profile.api_key, None
    if not key:
        if me is None:
            return Check("/v1 request", "skip", "no API key and no valid token to make one")
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
    checks = run_checks(state)
    if as_json or state.json:
        print_json([asdict(c) for c in checks])
    else:
        marks = {"pass": ("green", "PASS"), "fail": ("red", "FAIL"), "skip": ("yellow", "SKIP")}
        for c in checks:
            color, word = marks[c.status]
            if not state.quiet or c.status == "fail":
                click.echo(click.style(word, fg=color) + f"  {c.check}: {c.detail}")
                if c.hint and c.status == "fail":
                    click.echo(f"      hint: {c.hint}")
    if any(c.status == "fail" for c in checks):
        ctx.exit(FAILURE)
