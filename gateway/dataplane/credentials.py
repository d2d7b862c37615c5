"""A provider call uses the credentials its org saved, never the platform's own.

LiteLLM and the cloud SDKs fall back to the process's environment when a call carries no
credential: OPENAI_API_KEY and its kin, the AWS instance role, Google's application-default
credentials from the metadata server. On a shared control plane that would let any org spend
on the operator's cloud account, so unless the operator allows it (PROVIDER_AMBIENT_CREDENTIALS,
e.g. a single-tenant install or an agent in the customer's own VPC) a call carries the
org's own credentials or is not made.

Which credentials a kind takes, and which of them it cannot call without, is the kind's
entry in provider_kinds.py; this module holds the rule and the checks the entries use.

Lent, the platform's credentials go only to the vendor's own hosts (the kind's
``ambient_hosts``): an org admin who could point a keyless provider at a host of their
choosing would otherwise be sent the server's OPENAI_API_KEY, or a Google access token."""

import functools
import json
import re
from urllib.parse import urlsplit

# Sent instead of no key at all (a keyless vLLM ignores it), so no SDK looks for one.
NO_KEY = "bonito-no-key"
# Where a Google service-account key may send its signed token request.
GOOGLE_TOKEN_URIS = frozenset(
    {
        "https://oauth2.googleapis.com/token",
        "https://accounts.google.com/o/oauth2/token",
        "https://www.googleapis.com/oauth2/v4/token",
    }
)


def service_account_problem(raw) -> str | None:
    """Why a Vertex credential is not a plain Google service-account key (None: it is).
    Other kinds of Google credential (external_account, impersonation…) make google-auth
    fetch URLs or read files that the document itself names; a key's token_uri is where
    google-auth posts, so it must be Google's."""
    try:
        info = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError:
        return "is not JSON"
    if not isinstance(info, dict) or info.get("type") != "service_account":
        return 'must be a service-account key ("type": "service_account")'
    if not info.get("private_key") or not info.get("client_email"):
        return "lacks private_key or client_email"
    if info.get("token_uri", "https://oauth2.googleapis.com/token") not in GOOGLE_TOKEN_URIS:
        return "names a token_uri that is not Google's"
    return None


def lends_ambient(kind, creds: dict, *, ambient_allowed: bool) -> bool:
    """Whether a call of this kind with these credentials would have its SDK read the
    platform's own from the environment, the instance role or the metadata server: the
    operator lends them, the kind takes them, and a credential they stand in for is missing."""
    if not (ambient_allowed and kind.ambient_hosts):
        return False
    return any(
        f.secret and (f.ambient or f.name == "api_key") and not creds.get(f.name)
        for f in kind.fields
    )


@functools.cache
def _host_pattern(pattern: str) -> re.Pattern:
    """A host ``pattern`` of ``ambient_hosts`` (``*`` for part of one label) as a regex that
    matches the host and its subdomains (a private link's name: x.privatelink.openai.azure.com)."""
    label = "[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
    body = r"\.".join(
        "[a-z0-9-]+".join(re.escape(part) for part in piece.split("*"))
        for piece in pattern.split(".")
    )
    return re.compile(rf"(?:{label}\.)*{body}")


def ambient_host_problem(kind, api_base: str) -> str | None:
    """Why the platform's own credentials must not be sent to ``api_base`` (None: they may:
    no endpoint, so the vendor's or the operator's own, or https to one of the kind's
    ``ambient_hosts``)."""
    if not api_base:
        return None
    try:
        url = urlsplit(api_base.strip())
        host = (url.hostname or "").rstrip(".")
    except ValueError:
        url, host = None, ""
    clean = url is not None and url.scheme == "https" and not {"@", "\\"} & set(url.netloc)
    if clean and any(_host_pattern(h).fullmatch(host) for h in kind.ambient_hosts):
        return None
    hosts = ", ".join(kind.ambient_hosts)
    return (
        f"the server's own credentials (its environment, instance role) are sent only to {kind.label}'s hosts over https "
        f"({hosts}); an endpoint elsewhere needs credentials of its own"
    )


def problem(kind, creds: dict, *, ambient_allowed: bool, api_base: str = "") -> str | None:
    """Why a call of this kind (a provider_kinds.ProviderKind) with these credentials to
    ``api_base`` must not be made (None: it may): a credential its check refuses, or,
    unless the platform's own may stand in, one the kind cannot call without; or the
    platform's own, lent, going to a host that is not the vendor's."""
    for field in kind.fields:
        if field.secret and field.check and creds.get(field.name):
            bad = field.check(creds[field.name])
            if bad:
                return f"its {field.label} {bad}"
    if lends_ambient(kind, creds, ambient_allowed=ambient_allowed):
        return ambient_host_problem(kind, api_base)
    if not ambient_allowed or not kind.ambient_hosts:
        need = [f.label for f in kind.fields if f.secret and f.required and not creds.get(f.name)]
        if need:
            return (
                f"it has no credentials of its own ({', '.join(need)}); "
                "the platform's are never lent"
            )
    return None


def api_key(kind, creds: dict, *, ambient_allowed: bool) -> str | None:
    """The API key a call of this kind carries: the org's, or NO_KEY where the SDK would
    otherwise read the platform's from the environment (None: no key argument)."""
    if creds.get("api_key"):
        return creds["api_key"]
    if kind.takes_api_key and not lends_ambient(kind, creds, ambient_allowed=ambient_allowed):
        return NO_KEY
    return None
