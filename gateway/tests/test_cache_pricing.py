"""Prompt-cache pricing: input tokens a provider read from its prompt cache, or wrote to
it, cost what the provider charges for them (LiteLLM's price map: an Anthropic read 0.1x
the input price, a write 1.25x; an OpenAI read 0.5x or less), on every path that reports
them: chat completions (both provider paths), the Messages API (passed through and through
LiteLLM), streamed or not, the Responses API. A deployment's input price override moves
them by the same ratio. Driven through a live gateway against the fake upstream."""

import httpx
import pytest

from gateway.dataplane.snapshot import DeploymentInfo
from gateway.pricing import cache_prices, litellm_price_map
from gateway.tests.conftest import anthropic_deployment, usage_rows
from gateway.tests.fake_upstream import Behaviour

CLAUDE = "claude-haiku-4-5"  # LiteLLM prices its cache reads and writes
GPT = "gpt-4o-mini"  # its cache reads; OpenAI charges no writes
READ, WRITTEN, HOUR = 40, 24, 10  # HOUR of the WRITTEN tokens were cached for an hour
GPT_READ = 4  # of its 11 prompt tokens (OpenAI counts cached tokens within prompt_tokens)
PROMPT, OUTPUT = 11, 5  # what the fake reports besides the cache (5 words)


def ratios(model: str) -> tuple[float, float, float]:
    """(read, write, 1-hour write) prices over the input price, from LiteLLM's map."""
    entry = litellm_price_map()[model]
    base = entry["input_cost_per_token"]
    write = entry.get("cache_creation_input_token_cost")
    hour = entry.get("cache_creation_input_token_cost_above_1hr") or write
    return (
        entry["cache_read_input_token_cost"] / base,
        write / base if write else 1.0,
        hour / base if hour else 1.0,
    )


def test_the_map_s_ratios_follow_an_input_price_override():
    read, write, hour = ratios(CLAUDE)
    assert read < 1 < write < hour  # what makes this file's other checks mean something
    assert cache_prices(CLAUDE, 2e-6) == (
        pytest.approx(2e-6 * read),
        pytest.approx(2e-6 * write),
        pytest.approx(2e-6 * hour),
    )
    assert cache_prices(GPT, 1e-6) == (pytest.approx(1e-6 * ratios(GPT)[0]), None, None)
    assert cache_prices("a-model-litellm-does-not-price", 1e-6) == (None, None, None)


def test_the_one_formula_prices_each_part_and_keeps_every_token_in_one_part():
    dep = DeploymentInfo(
        id=1,
        model="m",
        provider="p",
        kind="anthropic",
        upstream_model=CLAUDE,
        input_cost=1e-6,
        output_cost=5e-6,
        cached_input_cost=1e-7,
        cache_write_cost=1.25e-6,
        cache_write_1h_cost=2e-6,
    )
    assert dep.cost(100, 10, 40, 24) == pytest.approx(36e-6 + 4e-6 + 30e-6 + 50e-6)
    assert dep.cost(100, 10, 40, 24, 10) == pytest.approx(36e-6 + 4e-6 + 17.5e-6 + 20e-6 + 50e-6)
    assert dep.cost(100, 10, 40, 24, 99) == dep.cost(100, 10, 40, 24, 24)  # held to the writes
    # a provider reporting more cached or written tokens than input is held to the input
    assert dep.cost(10, 0, 40, 24) == pytest.approx(10 * 1e-7)
    assert dep.cost(10, 0, 4, 24) == pytest.approx(4 * 1e-7 + 6 * 1.25e-6)
    assert dep.cost(10, 0, -5, -5) == pytest.approx(10e-6)
    assert dep.reservation(100, 10) == pytest.approx(100 * 2e-6 + 50e-6)  # the dearest input
    plain = DeploymentInfo(1, "m", "p", "openai", GPT, input_cost=1e-6, output_cost=2e-6)
    assert plain.cost(100, 10, 40, 24) == pytest.approx(100e-6 + 20e-6)  # an earlier agent's


@pytest.fixture
def cached(acme):
    """acme plus an Anthropic deployment of a cache-priced model (input overridden to $1/M,
    output $5/M) and an OpenAI-compatible one of gpt-4o-mini at the catalog's prices."""
    anthropic_deployment(acme, "claude", CLAUDE, input_price_per_mtok=1, output_price_per_mtok=5)
    acme.fake.behaviours[CLAUDE] = Behaviour(
        cached_tokens=READ, cache_write_tokens=WRITTEN, cache_write_1h_tokens=HOUR
    )
    acme.fake.behaviours[GPT] = Behaviour(cached_tokens=GPT_READ)
    return acme


def claude_cost() -> float:
    read, write, hour = ratios(CLAUDE)
    return (PROMPT * 1 + READ * read + (WRITTEN - HOUR) * write + HOUR * hour + OUTPUT * 5) / 1e6


def post(acme, path, body, anthropic=False):
    headers = (
        {"x-api-key": acme.raw, "anthropic-version": "2023-06-01"}
        if anthropic
        else {"Authorization": f"Bearer {acme.raw}"}
    )
    out = httpx.post(acme.url + path, json=body, headers=headers, timeout=20)
    assert out.status_code == 200, out.text
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_the_messages_api_prices_cache_reads_and_writes(cached, mode, stream):
    body = {"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    post(cached, "/v1/messages", {**body, "stream": stream}, anthropic=True)
    [row] = usage_rows(cached.org)
    assert (row.input_tokens, row.cached_tokens) == (PROMPT + READ + WRITTEN, READ)
    assert float(row.cost) == pytest.approx(claude_cost(), rel=1e-6)
    # priced apart, the same tokens cost other than at the input price
    assert float(row.cost) != pytest.approx((PROMPT + READ + WRITTEN + OUTPUT * 5) / 1e6)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_through_litellm_price_an_anthropic_model_s_cache(cached, stream):
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    out = post(cached, "/v1/chat/completions", body)
    if not stream:  # the writes are billed, not added to OpenAI's usage shape
        usage = out.json()["usage"]
        assert "cache_creation_input_tokens" not in usage
        assert set(usage["prompt_tokens_details"]) <= {"audio_tokens", "cached_tokens"}
    [row] = usage_rows(cached.org)
    assert (row.input_tokens, row.cached_tokens) == (PROMPT + READ + WRITTEN, READ)
    assert float(row.cost) == pytest.approx(claude_cost(), rel=1e-6)


def test_the_responses_api_prices_an_anthropic_model_s_cache(cached):
    post(cached, "/v1/responses", {"model": "claude", "input": "hi"})
    [row] = usage_rows(cached.org)
    assert (row.input_tokens, row.cached_tokens) == (PROMPT + READ + WRITTEN, READ)
    assert float(row.cost) == pytest.approx(claude_cost(), rel=1e-6)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_cache_reads_cost_the_catalog_s_cached_price(cached, mode, stream):
    body = {"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    post(cached, "/v1/chat/completions", body)
    [row] = usage_rows(cached.org)
    entry = litellm_price_map()[GPT]
    expected = (
        (PROMPT - GPT_READ) * entry["input_cost_per_token"]
        + GPT_READ * entry["cache_read_input_token_cost"]
        + OUTPUT * entry["output_cost_per_token"]
    )
    assert (row.input_tokens, row.cached_tokens) == (PROMPT, GPT_READ)
    assert float(row.cost) == pytest.approx(expected, rel=1e-6)


def test_an_openai_shaped_upstream_s_cache_writes_are_read_too():
    """An OpenAI-compatible gateway in front of such a model (OpenRouter, a LiteLLM proxy)
    reports the writes in LiteLLM's fields: they are priced, not billed as plain input."""
    from gateway.dataplane.proxy import _usage_counts

    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 3,
        "prompt_tokens_details": {
            "cached_tokens": 40,
            "cache_creation_tokens": 24,
            "cache_creation_token_details": {"ephemeral_1h_input_tokens": 10},
        },
    }
    assert tuple(_usage_counts(usage))[:5] == (100, 3, 40, 24, 10)
    assert tuple(
        _usage_counts(
            {"prompt_tokens": 9, "completion_tokens": 1, "cache_creation_input_tokens": 5}
        )
    )[:5] == (9, 1, 0, 5, 0)
    for bad in (True, -3, 2.5, "7", None):  # never a write count but a whole number
        assert (
            _usage_counts(
                {"prompt_tokens": 9, "completion_tokens": 1, "cache_creation_input_tokens": bad}
            ).written
            == 0
        )
