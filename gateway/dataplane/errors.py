"""OpenAI-shaped errors, with the statuses the official SDKs map to their exception classes."""

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


def model_not_found(model, smart_alias=False, embeddings=False):
    model = echoed(model)
    message = f"The model `{model}` does not exist or you do not have access to it."
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
