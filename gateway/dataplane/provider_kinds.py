"""Provider kinds: the one table of what Bonito knows about each kind of model provider.

A kind is one ``ProviderKind`` in ``KINDS``: its label, LiteLLM's model prefix, the fields a
connection of that kind takes (where each is stored, secret or not, required or not, how the
dashboard asks for it, which LiteLLM argument carries it), whether the gateway may call it
directly (pass-through), and what *Test connection* sends. Everything else reads this table:
the model's choices, the services' validation (dashboard, REST, admin and apply_config all
save through it), the REST serializer, the dashboard's provider form and the data plane
(upstream.py, credentials.py). Adding a kind is one entry here plus its test
(gateway/tests/test_provider_kinds.py checks that every entry is complete).

Plain Python: the data plane imports it, so no Django here."""

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as _factory

from .credentials import ambient_host_problem, lends_ambient, service_account_problem

# Where a field's value is kept on a ProviderConnection: its endpoint column, its plain
# settings (JSON) or its credentials (encrypted at rest, write-only everywhere).
ENDPOINT, SETTINGS, CREDENTIALS = "api_base", "settings", "credentials"
NAME_MAX_LENGTH = 20  # ProviderConnection.kind's column
OPENAI_BASE = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Field:
    """One value a provider connection of some kind takes."""

    name: str  # its key in settings/credentials (``api_base`` for the endpoint)
    label: str
    store: str = SETTINGS  # ENDPOINT, SETTINGS or CREDENTIALS
    required: bool = False
    # Required, but may be left out where the operator lends the platform's own credentials
    # and configuration (PROVIDER_AMBIENT_CREDENTIALS): the SDK then reads them from the
    # server's environment, instance role or metadata server.
    ambient: bool = False
    help: str = ""
    input: str = "text"  # how the dashboard asks: text | password | textarea | url
    placeholder: str = ""
    default: str = ""  # what a call uses when it is not set
    litellm: str = ""  # the LiteLLM argument that carries it ("": none)
    region: bool = False  # a deployment's region, when it has one, stands in for it
    json: bool = False  # a JSON document: text, or a mapping from apply_config / REST
    check: Callable[[object], str | None] | None = None  # why a value is refused, or None

    @property
    def secret(self) -> bool:
        """Stored encrypted and never shown again (by any page, API or log)."""
        return self.store == CREDENTIALS

    def describe(self) -> str:
        return f"{self.label} ({self.name})"


_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")


def region_problem(value) -> str | None:
    """Why ``value`` is no cloud region's name (us-east-1, europe-west4), or None. A region
    goes into the host a call is signed for (bedrock-runtime.<region>.amazonaws.com,
    <location>-aiplatform.googleapis.com): LiteLLM checks it too, and Bonito does not rely
    on that to keep a signed request or a token on the cloud's own hosts."""
    if isinstance(value, str) and _REGION.fullmatch(value):
        return None
    return "must be a region's name: lower-case letters, digits and -, as us-east-1"


def takes_region(kind: str) -> bool:
    """Whether a deployment's region stands in for a setting of ``kind``'s connections."""
    spec = get(kind)
    return spec is not None and any(f.region for f in spec.fields)


@dataclass(frozen=True, eq=False)
class Probe:
    """What *Test connection* sends to one of a provider's deployments."""

    endpoint: str = "chat"
    body: Mapping = _factory(
        default_factory=lambda: {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    )

    def request(self) -> dict:
        return json.loads(json.dumps(self.body))  # a fresh, plain copy (lists, dicts)


def _endpoint(label="Endpoint (API base)", *, required=False, ambient=False, **kw) -> Field:
    return Field(
        "api_base",
        label,
        store=ENDPOINT,
        required=required,
        ambient=ambient,
        input="url",
        litellm="api_base",
        **kw,
    )


def _api_key(label="API key", **kw) -> Field:
    return Field("api_key", label, store=CREDENTIALS, input="password", litellm="api_key", **kw)


@dataclass(frozen=True)
class ProviderKind:
    name: str  # stored in ProviderConnection.kind
    label: str
    litellm_prefix: str = ""  # LiteLLM's "<prefix>/<model>"; "" for a built-in kind
    fields: tuple[Field, ...] = ()
    # An OpenAI-style HTTP API the gateway may call directly over its pooled client
    # (GATEWAY_PASSTHROUGH), at its api_base or else ``default_api_base``.
    passthrough: bool = False
    default_api_base: str = ""
    # LiteLLM reaches it through the OpenAI SDK: the SDK's own (guarded) client carries the
    # call, and a whole JSON answer to a stream request is re-sent as an event stream.
    openai_shaped: bool = False
    # Serves OpenAI's Responses API (POST {api_base}/responses, stored responses): with
    # pass-through on, /v1/responses goes to it as sent; otherwise it is translated to chat
    # completions (gateway/dataplane/responses_api.py).
    responses_api: bool = False
    # Serves Anthropic's Messages API (POST {api_base}/v1/messages): with pass-through on,
    # /v1/messages goes to it as sent (gateway/dataplane/anthropic_api.py).
    messages_api: bool = False
    # Refuses chat's `top_k` (OpenAI's API): a translated request leaves it out.
    refuses_top_k: bool = False
    # The /v1 endpoints LiteLLM has no call for on this kind: a 400 unsupported_endpoint
    # before any call (the model's next deployment is tried first). Its moderations call is
    # OpenAI's SDK whatever the provider (it sent an Anthropic key to api.openai.com, lent a
    # Bedrock or Vertex call the server's OPENAI_API_KEY); it answered an image request to
    # Anthropic with a 200 holding no image.
    litellm_lacks: frozenset = frozenset()
    builtin: bool = False  # answered in process (the mock): no network, no endpoint
    # Where the platform's own credentials may be sent when the operator lends them
    # (PROVIDER_AMBIENT_CREDENTIALS) and a connection has none of its own: these hosts and
    # their subdomains, over https (``*``: part of one label). Only the vendor's API hosts,
    # not its whole domain: anyone can have a host under azure.com (cloudapp.azure.com) or
    # amazonaws.com (execute-api) with a valid certificate. An endpoint elsewhere needs
    # credentials of its own; a kind with none never lends them (a keyless call carries a
    # placeholder key).
    ambient_hosts: tuple[str, ...] = ()
    # LiteLLM arguments a call that carries its own credentials passes as given here, so
    # that the SDK reads nothing of the platform's from the environment beside them (a
    # connection's own AWS keys were sent with the server's AWS_SESSION_TOKEN, or replaced
    # by its AWS_BEARER_TOKEN_BEDROCK, to whatever endpoint the connection names).
    unlent: Mapping[str, str] = _factory(default_factory=dict)
    probe: Probe = Probe()
    help: str = ""  # one line for the dashboard's form
    model_hint: str = ""  # what a deployment's "upstream model" is for this kind

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def fields_in(self, store: str) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.store == store)

    @property
    def takes_api_key(self) -> bool:
        """Its SDK reads an API key from the environment when a call names none."""
        return self.field("api_key") is not None

    def problems(
        self, *, api_base: str, settings, credentials, ambient_allowed: bool
    ) -> dict[str, list[str]]:
        """Why a connection of this kind with these values cannot be saved, by where the
        value goes (``api_base``, ``settings``, ``credentials``); empty if it can."""
        errors: dict[str, list[str]] = {}

        def refuse(store, message):
            errors.setdefault(store, []).append(message)

        if api_base and not self.fields_in(ENDPOINT):
            refuse(
                ENDPOINT,
                f"The built-in {self.name} provider makes no network calls: leave the URL empty."
                if self.builtin
                else f"{self.label} providers take no endpoint.",
            )
        values = {ENDPOINT: {"api_base": api_base} if api_base else {}}
        for store, given in ((SETTINGS, settings), (CREDENTIALS, credentials)):
            if not isinstance(given, Mapping):
                refuse(store, f"{store} must be a mapping of names to values.")
                values[store] = {}
                continue
            values[store] = given
            known = {f.name: f for f in self.fields_in(store)}
            for name, value in given.items():
                f = known.get(name)
                if f is None:
                    takes = ", ".join(known) or "none"
                    refuse(store, f"{self.label} providers take no {name!r} (they take: {takes}).")
                elif not (isinstance(value, str) or (f.json and isinstance(value, Mapping))):
                    refuse(store, f"{f.describe()} must be text.")
                elif isinstance(value, str) and "\x00" in value:
                    # PostgreSQL's JSON cannot hold one (settings are stored as JSON).
                    refuse(store, f"{f.describe()} must not contain NUL characters.")
                elif value and f.check and (bad := f.check(value)):
                    refuse(store, f"{f.describe()} {bad}.")
        for f in self.fields:
            if not f.required or values[f.store].get(f.name):
                continue
            if f.ambient and ambient_allowed and self.ambient_hosts:
                continue
            refuse(
                f.store,
                f"{f.describe()} is required"
                + (
                    " (the platform's own credentials and settings are never lent to an "
                    "organization)."
                    if f.ambient
                    else "."
                ),
            )
        if ambient_allowed and api_base and ENDPOINT not in errors:
            lent = lends_ambient(self, values[CREDENTIALS], ambient_allowed=True)
            if lent and (bad := ambient_host_problem(self, api_base)):
                refuse(ENDPOINT, f"{self.field('api_base').describe()}: {bad}.")
        return errors

    def litellm_kwargs(self, *, api_base: str, region: str, settings, credentials) -> dict:
        """The LiteLLM arguments that carry this connection's endpoint, settings and
        credentials for one call (a deployment's region standing in where it may)."""
        sources = {
            ENDPOINT: {"api_base": api_base},
            SETTINGS: settings if isinstance(settings, Mapping) else {},  # (a row saved unchecked)
            CREDENTIALS: credentials if isinstance(credentials, Mapping) else {},
        }
        kwargs = {}
        for f in self.fields:
            if not f.litellm:
                continue
            value = (region if f.region else "") or sources[f.store].get(f.name) or f.default
            if value:
                kwargs[f.litellm] = value
        return kwargs


_KINDS = (
    ProviderKind(
        "openai",
        "OpenAI",
        ambient_hosts=("api.openai.com",),
        litellm_prefix="openai",
        passthrough=True,
        default_api_base=OPENAI_BASE,
        openai_shaped=True,
        refuses_top_k=True,
        responses_api=True,
        fields=(
            _endpoint(help=f"Empty: {OPENAI_BASE}.", placeholder=OPENAI_BASE),
            _api_key(placeholder="sk-…"),
        ),
        model_hint="gpt-4o-mini",
    ),
    ProviderKind(
        "azure_openai",
        "Azure OpenAI",
        ambient_hosts=(
            "openai.azure.com",
            "cognitiveservices.azure.com",
            "services.ai.azure.com",
            "openai.azure.us",
            "cognitiveservices.azure.us",
            "openai.azure.cn",
            "cognitiveservices.azure.cn",
        ),
        litellm_prefix="azure",
        openai_shaped=True,
        refuses_top_k=True,
        litellm_lacks=frozenset({"moderations"}),
        fields=(
            _endpoint(
                "Endpoint",
                required=True,
                ambient=True,
                placeholder="https://<resource>.openai.azure.com",
                help="Your Azure OpenAI resource's endpoint.",
            ),
            _api_key(),
            Field(
                "api_version",
                "API version",
                default="2024-10-21",
                litellm="api_version",
                placeholder="2024-10-21",
                help="Empty: 2024-10-21.",
            ),
        ),
        help="Each deployment's upstream model is the name of an Azure deployment.",
        model_hint="your Azure deployment's name",
    ),
    ProviderKind(
        "bedrock",
        "AWS Bedrock",
        ambient_hosts=(
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime-fips.*.amazonaws.com",
            "bedrock-runtime.*.vpce.amazonaws.com",  # a VPC endpoint's own names
            "bedrock-runtime.*.amazonaws.com.cn",
        ),
        # "" is not None to LiteLLM: no AWS_BEARER_TOKEN_BEDROCK (which replaces the keys'
        # signature), no AWS_SESSION_TOKEN beside the connection's own keys.
        unlent={"api_key": "", "aws_session_token": ""},
        litellm_prefix="bedrock",
        litellm_lacks=frozenset({"moderations"}),
        fields=(
            _endpoint(
                "Endpoint (optional)",
                help="A Bedrock runtime or VPC endpoint URL. Empty: the region's own.",
            ),
            Field(
                "aws_access_key_id",
                "AWS access key ID",
                store=CREDENTIALS,
                required=True,
                ambient=True,
                litellm="aws_access_key_id",
                placeholder="AKIA…",
            ),
            Field(
                "aws_secret_access_key",
                "AWS secret access key",
                store=CREDENTIALS,
                required=True,
                ambient=True,
                input="password",
                litellm="aws_secret_access_key",
            ),
            Field(
                "aws_session_token",
                "AWS session token",
                store=CREDENTIALS,
                input="password",
                litellm="aws_session_token",
                help="Only with temporary credentials.",
            ),
            Field(
                "aws_region_name",
                "Region",
                check=region_problem,
                default="us-east-1",
                region=True,
                litellm="aws_region_name",
                placeholder="us-east-1",
                help="Empty: us-east-1. A deployment's region, when set, wins.",
            ),
        ),
        model_hint="a Bedrock model id, e.g. anthropic.claude-3-5-haiku-20241022-v1:0",
    ),
    ProviderKind(
        "vertex",
        "GCP Vertex AI",
        ambient_hosts=(
            "aiplatform.googleapis.com",
            "*-aiplatform.googleapis.com",
            "aiplatform-*.p.googleapis.com",  # Private Service Connect
            "*-aiplatform-*.p.googleapis.com",
            "prediction.vertexai.goog",  # dedicated endpoints
        ),
        litellm_prefix="vertex_ai",
        litellm_lacks=frozenset({"moderations"}),
        fields=(
            _endpoint("Endpoint (optional)", help="Empty: Google's own for the location."),
            Field(
                "service_account_json",
                "Service account key (JSON)",
                store=CREDENTIALS,
                required=True,
                ambient=True,
                input="textarea",
                json=True,
                check=service_account_problem,
                litellm="vertex_credentials",
                help='The key file of a service account ("type": "service_account").',
            ),
            Field(
                "vertex_project",
                "Project ID",
                litellm="vertex_project",
                help="Empty: the service account's project.",
            ),
            Field(
                "vertex_location",
                "Location",
                check=region_problem,
                default="us-central1",
                region=True,
                litellm="vertex_location",
                placeholder="us-central1",
                help="Empty: us-central1. A deployment's region, when set, wins.",
            ),
        ),
        model_hint="a Vertex model id, e.g. gemini-1.5-flash",
    ),
    ProviderKind(
        "anthropic",
        "Anthropic",
        ambient_hosts=("api.anthropic.com",),
        litellm_prefix="anthropic",
        messages_api=True,
        # (LiteLLM itself refuses its speech, transcriptions and rerank: unsupported_request)
        litellm_lacks=frozenset({"moderations", "images", "embeddings"}),
        fields=(
            _endpoint(help="Empty: https://api.anthropic.com."),
            _api_key(placeholder="sk-ant-…"),
        ),
        model_hint="claude-3-5-haiku-latest",
    ),
    ProviderKind(
        "openai_compatible",
        "OpenAI-compatible (vLLM, Ollama, …)",
        litellm_prefix="openai",
        passthrough=True,
        openai_shaped=True,
        fields=(
            _endpoint(
                "Base URL",
                required=True,
                placeholder="https://llm.example.com/v1",
                help="The server's OpenAI-compatible base URL (up to /v1).",
            ),
            _api_key("API key (optional)", help="Empty for a server that takes no key."),
        ),
        model_hint="the model name the server serves",
    ),
    ProviderKind(
        "mock",
        "Mock (built-in, deterministic)",
        builtin=True,
        help="Answers at once, in process, with no network: for trying Bonito out.",
        model_hint="any name, e.g. mock-chat",
    ),
)

KINDS: dict[str, ProviderKind] = {k.name: k for k in _KINDS}


def get(name) -> ProviderKind | None:
    """The kind of this name, or None (for a name that is not one, whatever its type)."""
    return KINDS.get(name) if isinstance(name, str) else None


def names() -> list[str]:
    return list(KINDS)


def choices() -> list[tuple[str, str]]:
    """(name, label) of every kind: ProviderConnection.kind's choices (read at each use)."""
    return [(k.name, k.label) for k in KINDS.values()]


def unknown(name) -> str:
    return f"{name!r} is not a provider kind; the kinds are: {', '.join(KINDS)}."
