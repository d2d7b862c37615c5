"""Streaming (`"stream": true`) through the cloud providers Bonito reaches through LiteLLM,
each faked at the wire by gateway/tests/fake_clouds.py in its own streaming format: GCP
Vertex AI (Gemini's `streamGenerateContent?alt=sse`, behind Google's token endpoint), AWS
Bedrock (ConverseStream's binary event stream) and Azure OpenAI (OpenAI's SSE, with
Azure's extras).

Through /v1 an OpenAI SDK client gets each piece in order as the provider sends it, the
usage the provider reported, and exactly one usage row with that usage's cost; a stream
that breaks mid-way ends with an OpenAI-shaped error event and one row of what was seen; an
error before the stream (429, 500, a refused credential) fails over to the model's next
deployment, or is a clear error; the Responses and Messages APIs stream from the same
deployments."""

import json
import threading
import time
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from gateway import services
from gateway.dataplane.netpolicy import NetworkPolicy
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.fake_clouds import FakeClouds, Script, service_account
from gateway.tests.openai_schema import assert_openai_schema

HI = [{"role": "user", "content": "hi"}]
# Each case's provider kind (Bedrock twice: LiteLLM's Converse call, and InvokeModel, which
# it makes for a model named invoke/…).
KINDS = {
    "vertex": "vertex",
    "bedrock": "bedrock",
    "bedrock_invoke": "bedrock",
    "azure_openai": "azure_openai",
    "anthropic": "anthropic",
}
# Each kind's two upstream models (the second a failover's), as its provider names them.
FIRST = {
    "vertex": "gemini-2.0-flash",
    "bedrock": "anthropic.claude-3-5-haiku-20241022-v1:0",
    "bedrock_invoke": "invoke/anthropic.claude-3-5-haiku-20241022-v1:0",
    "azure_openai": "gpt-4o-deployment",
    "anthropic": "claude-3-5-haiku-20241022",
}
SECOND = {
    "vertex": "gemini-1.5-flash",
    "bedrock": "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "bedrock_invoke": "invoke/anthropic.claude-3-5-sonnet-20241022-v2:0",
    "azure_openai": "gpt-4o-backup",
    "anthropic": "claude-3-5-sonnet-20241022",
}
# Where each case's stream request goes (its provider's streaming call).
STREAM_CALL = {
    "vertex": ":streamGenerateContent",
    "bedrock": "/converse-stream",
    "bedrock_invoke": "/invoke-with-response-stream",
    "azure_openai": "/chat/completions",
    "anthropic": "/v1/messages",
}
PIECES = ["Hello", " from", " the", " cloud", "!"]
# The cases whose provider reports the prompt's tokens before the answer ends (Gemini's
# usageMetadata on every chunk, Claude's message_start); the others only at the end.
PROMPT_REPORTED_FIRST = {"vertex", "anthropic", "bedrock_invoke"}
IN_PRICE, OUT_PRICE = Decimal("1.25"), Decimal("5")  # per million tokens


def cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * IN_PRICE + output_tokens * OUT_PRICE) / 1_000_000


@pytest.fixture(scope="session")
def clouds_server():
    return FakeClouds().start()


@pytest.fixture
def clouds(clouds_server, monkeypatch, loopback_allowed):
    """The fake clouds; google-auth (which fetches Vertex's access tokens over `requests`)
    reaches Google's token endpoint through the fake's proxy and trusts its CA."""
    clouds_server.reset()
    monkeypatch.setenv("HTTPS_PROXY", clouds_server.proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(clouds_server.ca_file))
    yield clouds_server
    clouds_server.reset()


@pytest.fixture(params=list(KINDS))
def kind(request, gw):
    gw.upstreams.prewarm((KINDS[request.param],))
    return request.param


def script(clouds, upstream: str, **kw) -> Script:
    """What the fake does for ``upstream`` (as the provider is sent it: no invoke/)."""
    clouds.scripts[upstream.removeprefix("invoke/")] = made = Script(**kw)
    return made


def deploy(acme, clouds, kind, upstream, *, priority=0, account=None, model_name="cloud"):
    """A deployment of ``model_name`` as ``upstream``, on a connection of ``kind`` to the
    fake (credentials of the kind's own sort; for Vertex a key the token endpoint knows)."""
    credentials, settings = {
        "vertex": (
            {"service_account_json": json.dumps(account or clouds.account())},
            {"vertex_project": "bonito-test", "vertex_location": "us-central1"},
        ),
        "bedrock": (
            {
                "aws_access_key_id": "AKIDFAKEEXAMPLE",
                "aws_secret_access_key": "fake-aws-secret-access-key",
            },
            {"aws_region_name": "us-east-1"},
        ),
        "azure_openai": ({"api_key": "fake-azure-api-key-0123"}, {}),
        "anthropic": ({"api_key": "sk-ant-fake-cloud-key"}, {}),
    }[KINDS.get(kind, kind)]
    provider = services.provider_save(
        actor=ACTOR,
        org=acme.org,
        name=f"{kind[:6]}-{priority}" if model_name == "cloud" else model_name,
        kind=KINDS.get(kind, kind),
        api_base=clouds.url,
        settings=settings,
        credentials=credentials,
    )
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name=model_name,
        provider=provider,
        upstream_model=upstream,
        priority=priority,
        input_price_per_mtok=IN_PRICE,
        output_price_per_mtok=OUT_PRICE,
    )
    refresh_snapshot()
    return provider


def _client(acme) -> openai.OpenAI:
    return openai.OpenAI(base_url=acme.base_url, api_key=acme.raw, max_retries=0, timeout=60)


def _raw_chat_stream(acme, body: dict):
    """httpx.stream's context manager for ``body`` POSTed to /v1/chat/completions with
    acme's key: the stream's bytes as they come, no SDK between."""
    return httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {acme.raw}"},
    )


def _stream_texts(stream, gate=None) -> tuple[list[str], object]:
    """The content pieces of an SDK chat stream and its usage; ``gate`` set once the first
    piece is here (the fake sends the second only then)."""
    texts, usage = [], None
    for chunk in stream:
        assert chunk.choices or chunk.usage, "only the usage chunk has no choices"
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                texts.append(choice.delta.content)
                if gate is not None:
                    gate.set()
    return texts, usage


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_is_relayed_as_it_arrives_and_billed_once(acme, clouds, kind, include_usage):
    deploy(acme, clouds, kind, FIRST[kind])
    gate = threading.Event()
    made = script(clouds, FIRST[kind], pieces=PIECES, gate=gate)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    try:
        texts, usage = _stream_texts(
            _client(acme).chat.completions.create(model="cloud", messages=HI, stream=True, **extra),
            gate,
        )
    finally:
        gate.set()
    # The first piece reached the client while the provider held back the second.
    assert made.gate_opened is True
    assert texts == PIECES
    if include_usage:
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 34, 46)
    else:
        assert usage is None
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.endpoint) == ("success", 200, "chat")
    assert (row.input_tokens, row.output_tokens) == (12, 34)
    assert row.cost == cost(12, 34)
    assert row.deployment.endswith("-0/" + FIRST[kind])
    [sent] = clouds.requests
    assert sent["path"].endswith(STREAM_CALL[kind])


@pytest.mark.parametrize("tool", ["", "get_weather"])
def test_every_streamed_event_is_openai_shaped(acme, clouds, kind, tool):
    """Nothing of LiteLLM's or the provider's own beside OpenAI's fields (Vertex's metadata
    on every Gemini chunk, Azure's content filter results and its chunk of nothing but
    them), and no chunk but the usage one without choices; text or a tool call, streamed
    or whole."""
    deploy(acme, clouds, kind, FIRST[kind])
    script(clouds, FIRST[kind], pieces=PIECES, tool=tool)
    body = {
        "model": "cloud",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
        **({"tools": [WEATHER]} if tool else {}),
    }
    with _raw_chat_stream(acme, body) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[5:]) for line in lines[:-1]]
    for chunk in chunks:
        assert_openai_schema(chunk, "CreateChatCompletionStreamResponse")
    assert all(c["choices"] for c in chunks[:-1]) and chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 46
    whole = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    answer = httpx.post(
        acme.base_url + "/chat/completions",
        json=whole,
        timeout=60,
        headers={"Authorization": f"Bearer {acme.raw}"},
    ).json()
    assert_openai_schema(answer, "CreateChatCompletionResponse")
    message = answer["choices"][0]["message"]
    if tool:
        assert message["tool_calls"][0]["function"]["name"] == tool
        assert answer["choices"][0]["finish_reason"] == "tool_calls"
    else:
        assert message["content"] == "".join(PIECES)


@pytest.mark.parametrize("how", ["reset", "error"])
def test_a_stream_that_breaks_midway_ends_with_an_error_event_and_one_row(acme, clouds, kind, how):
    """The connection dropped, or the provider's own error event (Gemini's error object,
    Bedrock's modelStreamErrorException, Azure's error): the client has the pieces sent
    before it, then an OpenAI-shaped error event (the SDK raises it), never a 500; the row
    says error and bills what was known: the prompt as the provider reported it if it did
    before the break (else counted), and the output relayed (or the provider's count so
    far, if more)."""
    deploy(acme, clouds, kind, FIRST[kind])
    script(clouds, FIRST[kind], pieces=PIECES, break_after=2, break_how=how)
    texts = []
    with pytest.raises(openai.APIError) as failed:
        stream = _client(acme).chat.completions.create(
            model="cloud", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            texts += [c.delta.content for c in chunk.choices if c.delta.content]
    assert texts == PIECES[:2]
    assert failed.value.code == "stream_broken"
    assert failed.value.message.endswith(
        "the connection to the provider was lost"
        if how == "reset"
        else "the provider reported an error"
    )
    assert not isinstance(failed.value, openai.APIStatusError)  # an event, not a status
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.error_type) == ("error", 502, "stream_broken")
    if kind in PROMPT_REPORTED_FIRST:
        assert row.input_tokens == 12  # as the provider reported it before the break
    else:
        assert row.input_tokens > 0  # counted
    assert row.output_tokens >= 2
    assert row.cost == cost(row.input_tokens, row.output_tokens)
    assert len(clouds.requests) == 1  # nothing is tried again once the answer began


@pytest.mark.parametrize("status", [429, 500, 401, 403])
def test_an_error_before_the_stream_fails_over_to_the_next_deployment(acme, clouds, kind, status):
    deploy(acme, clouds, kind, FIRST[kind], priority=0)
    deploy(acme, clouds, kind, SECOND[kind], priority=1)
    script(clouds, FIRST[kind], status=status)
    script(clouds, SECOND[kind], pieces=["from", " the", " second"])
    texts, usage = _stream_texts(
        _client(acme).chat.completions.create(
            model="cloud", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert texts == ["from", " the", " second"]
    assert usage.completion_tokens == 34
    [row] = usage_rows(acme.org)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", 12, 34)
    assert row.deployment.endswith("-1/" + SECOND[kind])
    assert [r["model"] for r in clouds.requests] == [
        FIRST[kind].removeprefix("invoke/"),
        SECOND[kind].removeprefix("invoke/"),
    ]


@pytest.mark.parametrize("status", [429, 500, 401, 403, 400])
def test_an_error_before_the_stream_with_no_deployment_left_is_a_clear_error(
    acme, clouds, kind, status
):
    """The client gets a status error, never a 500 nor an empty stream, in words that say
    what happened: the provider's own (a request it refused, 400, is the client's to fix),
    or, for a refused credential, that the deployment's credentials were refused (the
    provider's words, about the org's key, are for the org's admin only)."""
    deploy(acme, clouds, kind, FIRST[kind])
    script(clouds, FIRST[kind], status=status)
    with pytest.raises(openai.APIStatusError) as failed:
        _client(acme).chat.completions.create(model="cloud", messages=HI, stream=True)
    error = failed.value
    if status == 400:
        assert error.status_code == 400
        assert error.body["message"] == "injected 400"  # the provider's words
        assert error.body["type"] == "invalid_request_error"
    elif status == 429:  # rate limited, not down: the SDK's RateLimitError, told to wait
        assert isinstance(error, openai.RateLimitError)
        assert (error.body["type"], error.body["code"]) == (
            "rate_limit_error",
            "upstream_rate_limited",
        )
        assert int(error.response.headers["retry-after"]) >= 1
        assert "injected 429" in error.message
    else:
        assert error.status_code == 502
        assert error.body["code"] == "upstream_error"
        if status in (401, 403):
            assert "refused this deployment's credentials" in error.message
            assert "injected" not in error.message
        else:
            assert f"injected {status}" in error.message
    rows = usage_rows(acme.org)
    assert len(rows) == 1 and rows[0].http_status == error.status_code


def test_a_vertex_key_google_refuses_is_a_credentials_failure(acme, clouds, gw):
    """Google's token endpoint refusing the service-account key (deleted, disabled): the
    deployment's credentials failed, not the network, and the next deployment serves."""
    gw.upstreams.prewarm(("vertex",))
    unknown, _public_key = service_account()  # a key the token endpoint never issued
    deploy(acme, clouds, "vertex", FIRST["vertex"], account=unknown)
    with pytest.raises(openai.APIStatusError) as failed:
        _client(acme).chat.completions.create(model="cloud", messages=HI, stream=True)
    assert failed.value.status_code == 502
    assert "refused this deployment's credentials" in failed.value.message
    assert "could not reach" not in failed.value.message
    assert clouds.requests == []  # no call without a token
    deploy(acme, clouds, "vertex", SECOND["vertex"], priority=1)
    texts, _usage = _stream_texts(
        _client(acme).chat.completions.create(model="cloud", messages=HI, stream=True)
    )
    assert texts == Script().pieces
    assert [r["model"] for r in clouds.requests] == [SECOND["vertex"]]


def test_a_vertex_access_token_serves_many_requests(acme, clouds, gw):
    """The service account's token is fetched once, not on every request."""
    gw.upstreams.prewarm(("vertex",))
    deploy(acme, clouds, "vertex", FIRST["vertex"])
    before = clouds.token_requests
    for _ in range(3):
        texts, _usage = _stream_texts(
            _client(acme).chat.completions.create(model="cloud", messages=HI, stream=True)
        )
        assert texts == Script().pieces
    assert clouds.token_requests - before == 1
    tokens = {r["headers"]["Authorization"] for r in clouds.requests}
    assert len(tokens) == 1 and tokens.pop().removeprefix("Bearer ") in clouds.tokens


def test_the_responses_api_streams_from_the_deployment(acme, clouds, kind):
    deploy(acme, clouds, kind, FIRST[kind])
    gate = threading.Event()
    made = script(clouds, FIRST[kind], pieces=PIECES, gate=gate)
    deltas, completed = [], None
    try:
        for event in _client(acme).responses.create(model="cloud", input="hi", stream=True):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
                gate.set()
            elif event.type == "response.completed":
                completed = event.response
    finally:
        gate.set()
    assert made.gate_opened is True
    assert deltas == PIECES
    assert completed.output_text == "".join(PIECES)
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (12, 34)
    [row] = usage_rows(acme.org)
    assert (row.status, row.endpoint, row.input_tokens, row.output_tokens) == (
        "success",
        "responses",
        12,
        34,
    )
    assert row.cost == cost(12, 34)


def test_the_messages_api_streams_from_the_deployment(acme, clouds, kind):
    deploy(acme, clouds, kind, FIRST[kind])
    gate = threading.Event()
    made = script(clouds, FIRST[kind], pieces=PIECES, gate=gate)
    client = anthropic.Anthropic(base_url=acme.url, api_key=acme.raw, max_retries=0, timeout=60)
    texts = []
    try:
        with client.messages.stream(model="cloud", max_tokens=100, messages=HI) as stream:
            for text in stream.text_stream:
                texts.append(text)
                gate.set()
            final = stream.get_final_message()
    finally:
        gate.set()
    assert made.gate_opened is True
    assert texts == PIECES
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 34)
    [row] = usage_rows(acme.org)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", 12, 34)
    assert row.cost == cost(12, 34)


def test_a_messages_stream_that_breaks_midway_is_an_anthropic_error_event(acme, clouds, kind):
    deploy(acme, clouds, kind, FIRST[kind])
    script(clouds, FIRST[kind], pieces=PIECES, break_after=2)
    client = anthropic.Anthropic(base_url=acme.url, api_key=acme.raw, max_retries=0, timeout=60)
    texts = []
    with (
        pytest.raises(anthropic.APIError),
        client.messages.stream(model="cloud", max_tokens=100, messages=HI) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts == PIECES[:2]
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status) == ("error", 502)
    assert row.input_tokens > 0 and row.output_tokens >= 2


def test_a_client_that_goes_away_cuts_the_provider_s_stream_and_is_recorded(acme, clouds, kind):
    """The provider's stream is closed when the client leaves (a long answer is not paid
    for to its end), and the request has one row of what was relayed."""
    deploy(acme, clouds, kind, FIRST[kind])
    gate = threading.Event()
    script(clouds, FIRST[kind], pieces=["w "] * 200, gate=gate, delay=0.05)
    body = {"model": "cloud", "messages": HI, "stream": True}
    try:
        with _raw_chat_stream(acme, body) as response:
            for line in response.iter_lines():
                if '"w "' in line:
                    break  # the first piece: leave
    finally:
        gate.set()
    deadline = time.monotonic() + 10
    while clouds.cut_streams < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert clouds.cut_streams == 1
    while not usage_rows(acme.org) and time.monotonic() < deadline:
        time.sleep(0.05)  # (recorded as the gateway notices the client gone)
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.error_type) == ("error", 499, "client_disconnected")
    assert row.input_tokens > 0 and row.output_tokens >= 1


@pytest.mark.parametrize("stream", [True, False])
def test_the_network_policy_holds_on_every_kind_s_calls(acme, clouds, kind, gw, stream):
    """A deployment's endpoint on an address the policy refuses (here loopback, the
    default) is never connected to, streamed or not, whichever client LiteLLM uses."""
    deploy(acme, clouds, kind, FIRST[kind])
    gw.upstreams.network = NetworkPolicy()  # loopback refused again
    with pytest.raises(openai.APIStatusError) as failed:
        response = _client(acme).chat.completions.create(model="cloud", messages=HI, stream=stream)
        if stream:
            list(response)
    assert failed.value.status_code == 502
    assert "could not reach the provider" in failed.value.message
    assert clouds.requests == []


def test_a_responses_stream_that_breaks_midway_ends_with_an_error_event(acme, clouds, kind):
    """The Responses API's `error` event (which the SDK raises), no response.completed."""
    deploy(acme, clouds, kind, FIRST[kind])
    script(clouds, FIRST[kind], pieces=PIECES, break_after=2)
    deltas, completed = [], []
    with pytest.raises(openai.APIError) as failed:
        for event in _client(acme).responses.create(model="cloud", input="hi", stream=True):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                completed.append(event)
    assert deltas == PIECES[:2] and completed == []
    assert failed.value.code == "stream_broken"
    [row] = usage_rows(acme.org)
    assert (row.status, row.http_status, row.endpoint) == ("error", 502, "responses")
    assert row.input_tokens > 0 and row.output_tokens >= 2
    assert row.cost == cost(row.input_tokens, row.output_tokens)


@pytest.mark.parametrize("stream", [True, False])
def test_a_slow_google_token_endpoint_holds_a_request_no_longer_than_its_timeout(
    acme, clouds, gw, stream
):
    """google-auth fetches Vertex's access token outside LiteLLM's HTTP timeout (under its
    own, 120 s): a token endpoint that does not answer must not hold the request past the
    org's timeout (it held it until the endpoint answered)."""
    from gateway.models import GatewayConfig

    gw.upstreams.prewarm(("vertex",))
    # One call first: the process's first Vertex call imports google-auth's modules.
    deploy(acme, clouds, "vertex", SECOND["vertex"], model_name="warm")
    _client(acme).chat.completions.create(model="warm", messages=HI)
    GatewayConfig.objects.update_or_create(org=acme.org, defaults={"request_timeout_s": 1})
    deploy(acme, clouds, "vertex", FIRST["vertex"])  # a key of its own: a token to fetch
    clouds.token_delay = 6
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        _client(acme).chat.completions.create(model="cloud", messages=HI, stream=stream)
    took = time.monotonic() - started
    assert failed.value.status_code == 504, failed.value.message
    assert took < 4
    assert [(r.status, r.http_status) for r in usage_rows(acme.org)][-1] == ("error", 504)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_streamed_tool_call_arrives_whole(acme, clouds, kind):
    """A function call as each provider streams it (Gemini's whole functionCall part,
    Bedrock's toolUse blocks, Claude's input_json_delta pieces, Azure's tool_calls deltas)
    reaches the client as OpenAI streams one: opened with its id and name, its arguments
    in pieces that join to the JSON, finish_reason tool_calls; billed once."""
    deploy(acme, clouds, kind, FIRST[kind])
    script(clouds, FIRST[kind], tool="get_weather")
    stream = _client(acme).chat.completions.create(
        model="cloud",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls, finishes, usage = {}, [], None
    for chunk in stream:
        assert chunk.choices or chunk.usage
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finishes += [choice.finish_reason] if choice.finish_reason else []
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = entry["id"] or call.id
                entry["name"] += call.function.name or "" if call.function else ""
                entry["arguments"] += call.function.arguments or "" if call.function else ""
    [call] = calls.values()
    assert call["id"] and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert finishes == ["tool_calls"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 34)
    [row] = usage_rows(acme.org)
    assert (row.status, row.input_tokens, row.output_tokens) == ("success", 12, 34)
    sent = clouds.requests[0]["body"]
    assert "get_weather" in json.dumps(sent)  # the tool was passed on in the provider's terms
