"""OpenAI-shaped errors, with the statuses the official SDKs map to their exception classes."""

import math
from dataclasses import dataclass, field

from core.names_rule import name_safe

# The most of a client's text an error message echoes (then "…").
ECHO_LIMIT = 200


@dataclass
class GatewayError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict = field(default_factory=dict)
    # Recorded in the usage row; defaults to the code.
    error_type: str | None = None
    # The usage row's status; None: "rejected" below 500, "error" from 500.
    record_status: str | None = None

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    @property
    def usage_error_type(self) -> str:
        return self.error_type or self.code or self.type


def bad_request(message, param=None, code=None):
    return GatewayError(400, message, "invalid_request_error", code, param)


def invalid_key(
    message="Incorrect API key provided. Create a bn- key in the Bonito dashboard (Keys).",
):
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key")


def not_permitted(message, param="model"):
    return GatewayError(403, message, "permission_error", "model_not_permitted", param)


def echoed(text: str) -> str:
    """The client's own text as a message may quote it: every character the names rule
    refuses (a bidi override, a zero-width space, a line break) written as its escape, at
    most ECHO_LIMIT characters. A client, its logs or a UI showing the message must not draw
    a spoofed or reordered name from it, nor carry a megabyte of it."""
    return name_safe(text, ECHO_LIMIT)


def model_not_found(model, smart_alias=False, embeddings=False, suggestion=None):
    """``suggestion``: a model of the key's own org that the name was likely meant to be
    (the same name without its surrounding whitespace, or in another case), or None."""
    spaced = model != model.strip()
    model = echoed(model)
    message = f"The model `{model}` does not exist or you do not have access to it."
    if spaced:
        message += (
            " The name has leading or trailing whitespace, which no model name has"
            " (names are stored trimmed)."
        )
    if suggestion is not None:
        message += f" Did you mean `{echoed(suggestion)}`?"
    if smart_alias and embeddings:
        message += (
            f" `{model}` asks for smart routing, which scores prompts: it serves chat, "
            "completions, the Responses and Messages APIs; ask for embeddings by name."
        )
    elif smart_alias:
        message += (
            f" `{model}` asks for smart routing, which is not on for this organization: an "
            "org admin turns it on by setting its tiers (Routing in the dashboard, or "
            "smart_tiers in the gateway settings)."
        )
    return GatewayError(404, message, "invalid_request_error", "model_not_found", "model")


def rate_limited(
    message, retry_after_s: float, code="rate_limit_exceeded", headers=None, kind="requests"
):
    """A 429 whose type is the limit's unit, as OpenAI's: "requests" or "tokens"."""
    retry = max(1, int(retry_after_s + 0.999))
    return GatewayError(
        429, message, kind, code, None, {"Retry-After": str(retry), **(headers or {})}
    )


# Retry-After of a 429 from the providers when none of them said how long to wait.
UPSTREAM_RETRY_AFTER_DEFAULT_S = 5
# A provider's Retry-After past this (a day) is passed on as this.
UPSTREAM_RETRY_AFTER_MAX_S = 86400


def upstream_rate_limited(
    retry_after_s: float | None, last, *, some_unfit: bool = False, what: str = "this model"
) -> GatewayError:
    """Every deployment tried last was refused by its provider's rate limit (429): a 429,
    so the SDKs raise RateLimitError and wait, rather than a 502 that reads as an outage.
    ``retry_after_s``: the smallest Retry-After the providers sent (None: none sent);
    ``some_unfit``: others could not take the request at all (the prompt too long);
    ``what``: the model, or a smart-routed request's tiers (proxy._what_failed)."""
    if retry_after_s is None or not math.isfinite(retry_after_s):
        retry = UPSTREAM_RETRY_AFTER_DEFAULT_S
    else:
        retry = max(1, math.ceil(min(retry_after_s, UPSTREAM_RETRY_AFTER_MAX_S)))
    return GatewayError(
        429,
        (
            f"Every deployment of {what} that can take this request is rate limited by "
            if some_unfit
            else f"Every deployment of {what} is rate limited by "
        )
        + f"its provider; retry after {retry}s. Last error: {last}.",
        "rate_limit_error",
        "upstream_rate_limited",
        headers={"Retry-After": str(retry)},
        error_type="upstream_rate_limited",
        record_status="error",
    )


def too_large(limit_bytes):
    return GatewayError(
        413,
        f"Request body is larger than the {limit_bytes} bytes this gateway accepts.",
        "invalid_request_error",
        "request_too_large",
    )


def search_unpriced(param: str) -> GatewayError:
    """A request for web searches to a model none of whose deployments has a price per
    search (LiteLLM's map, by upstream model): refused, never served unmetered."""
    return bad_request(
        "Web search is served only by deployments whose price per search Bonito knows "
        "(LiteLLM's price map, by the upstream model): this model has none. Run the search "
        "in your app (function tools) or use a model that has one.",
        param,
        "unsupported_value",
    )
