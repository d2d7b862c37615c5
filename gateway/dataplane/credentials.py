"""A provider call uses the credentials its org saved, never the platform's own.

LiteLLM and the cloud SDKs fall back to the process's environment when a call carries no
credential: OPENAI_API_KEY and its kin, the AWS instance role, Google's application-default
credentials from the metadata server. On a shared control plane that would let any org spend
on the operator's cloud account, so unless the operator allows it (PROVIDER_AMBIENT_CREDENTIALS,
e.g. a single-tenant install or an agent in the customer's own VPC) a call carries the
org's own credentials or is not made."""

import json

# Kinds whose SDK reads an API key from the environment when the call names none.
API_KEY_KINDS = frozenset({"openai", "openai_compatible", "azure_openai", "anthropic"})
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


def missing(kind: str, creds: dict) -> str | None:
    """What a provider of this kind lacks to call without the platform's own credentials."""
    if kind == "bedrock" and not (
        creds.get("aws_access_key_id") and creds.get("aws_secret_access_key")
    ):
        return "an AWS access key id and secret access key"
    if kind == "vertex" and not creds.get("service_account_json"):
        return "a Google service-account key (JSON)"
    return None


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


def problem(kind: str, creds: dict, *, ambient_allowed: bool) -> str | None:
    """Why a call with these credentials must not be made (None: it may)."""
    if kind == "vertex" and creds.get("service_account_json"):
        bad = service_account_problem(creds["service_account_json"])
        if bad:
            return f"its service-account JSON {bad}"
    if not ambient_allowed:
        need = missing(kind, creds)
        if need:
            return f"it has no credentials of its own ({need}); the platform's are never lent"
    return None
