"""Prices that depend on more than the token counts. By the prompt's size: where a provider
charges more for every token of a request whose prompt is over a threshold (Gemini and
Claude above 200k prompt tokens, GPT-5.x above 272k, Alibaba's tiered tables), the usage
row's cost is that dearer price. By the service tier the provider served (OpenAI's flex at
half the price, priority at about 1.75x; Gemini's, Azure's, Bedrock's): that tier's
prices. LiteLLM's own cost calculator is the reference for every model its map prices so;
the gateway is driven live against the fake upstream for the paths a request takes."""

import concurrent.futures
import dataclasses
import random
import time

import httpx
import orjson
import pytest

from gateway import services
from gateway.dataplane import tokens
from gateway.dataplane.snapshot import DISCOUNT_TIERS, DeploymentInfo, billed_tier
from gateway.pricing import (
    _ratio_steps,
    _scaled,
    audio_prices,
    base_prices,
    cache_prices,
    context_prices,
    litellm_price_map,
    search_price,
    tier_prices,
)
from gateway.tests.conftest import (
    ACTOR,
    anthropic_deployment,
    openai_provider,
    refresh_snapshot,
    usage_rows,
)
from gateway.tests.fake_upstream import Behaviour

GPT = "gpt-5.4"  # LiteLLM's map: every token at 2x input, 1.5x output above 272k prompt tokens
CLAUDE = "claude-haiku-5-5"  # above 100k, with cache reads and writes priced apart
XAI = "xai/grok-4.3"  # xAI bills the dearer price from a prompt of exactly the threshold


def catalog_deployment(name: str) -> DeploymentInfo:
    inp, out = base_prices(litellm_price_map()[name])
    read, write, hour = cache_prices(name, inp)
    return DeploymentInfo(
        1,
        "m",
        "p",
        "openai",
        name,
        input_cost=inp,
        output_cost=out,
        cached_input_cost=read,
        cache_write_cost=write,
        cache_write_1h_cost=hour,
        context_prices=context_prices(name, inp, out),
        tier_prices=tier_prices(name, inp, out),
        search_cost=search_price(name),
        audio_costs=audio_prices(name, inp, out),
    )


def litellm_cost(
    name: str, prompt: int, output: int, cached: int, written: int, tier: str | None = None
) -> float:
    from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token
    from litellm.types.utils import PromptTokensDetailsWrapper, Usage

    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=prompt + output,
        cache_read_input_tokens=cached,
        cache_creation_input_tokens=written,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cached_tokens=cached, cache_creation_tokens=written
        ),
    )
    provider = litellm_price_map()[name].get("litellm_provider")
    prompt_cost, output_cost = generic_cost_per_token(
        model=name, usage=usage, custom_llm_provider=provider, service_tier=tier
    )
    return prompt_cost + output_cost


def models_priced_by_size() -> list[str]:
    return [
        name
        for name, entry in litellm_price_map().items()
        if isinstance(entry, dict)
        and (
            # a table of token prices (search APIs' tables price queries, not tokens)
            any("input_cost_per_token" in row for row in entry.get("tiered_pricing") or ())
            or (
                entry.get("input_cost_per_token")
                and any("_above_" in f and f.endswith("k_tokens") for f in entry)
            )
        )
    ]


def test_every_model_the_map_prices_by_size_costs_what_litellm_says_at_each_threshold():
    names = models_priced_by_size()
    assert len(names) > 100  # Gemini, Claude, GPT-5.x, Qwen… (what makes this mean something)
    rng = random.Random(7)
    checked = 0
    for name in names:
        dep = catalog_deployment(name)
        assert dep.context_prices, name
        for threshold in {step[0] for step in dep.context_prices}:
            for prompt in (threshold - 1, threshold, threshold + 1, threshold + 5_000, 7):
                if prompt <= 0:
                    continue
                cached, written = rng.randint(0, prompt // 3), rng.randint(0, prompt // 4)
                output = rng.randint(1, 4_000)
                expected = litellm_cost(name, prompt, output, cached, written)
                assert dep.cost(prompt, output, cached, written) == pytest.approx(
                    expected, rel=1e-9, abs=1e-15
                ), (name, prompt, cached, written, output)
                checked += 1
    assert checked > 500


def test_every_service_tier_the_map_prices_costs_what_litellm_says():
    names = [
        n for n, e in litellm_price_map().items() if isinstance(e, dict) and tier_prices(n, 1, 1)
    ]
    assert len(names) > 200  # OpenAI, Azure, Gemini, Vertex, Bedrock… priority and flex
    rng = random.Random(11)
    checked = 0
    for name in names:
        dep = catalog_deployment(name)
        for tier, schedule in dep.tier_prices.items():
            for threshold in {step[0] for step in schedule}:
                for prompt in {threshold, threshold + 1, 1_000}:
                    if prompt <= 0:
                        continue
                    cached = rng.randint(0, prompt // 3)
                    written = rng.randint(0, prompt // 4)
                    output = rng.randint(1, 4_000)
                    expected = litellm_cost(name, prompt, output, cached, written, tier)
                    assert dep.cost(prompt, output, cached, written, tier=tier) == pytest.approx(
                        expected, rel=1e-9, abs=1e-15
                    ), (name, tier, prompt, cached, written, output)
                    checked += 1
    assert checked > 500
    flex = catalog_deployment("gpt-5.4")
    assert (
        flex.cost(1000, 100, tier="flex")
        < flex.cost(1000, 100)
        < flex.cost(1000, 100, tier="priority")
    )
    # a tier a model does not price apart is billed as standard
    assert flex.cost(1000, 100, tier="ultrafast") == flex.cost(1000, 100)
    # a reservation holds the dearer of the standard and the requested tier's prices
    assert flex.reservation(1000, 100, "priority") == pytest.approx(
        1000 * flex.prices(1000, "priority")[0] + 100 * flex.prices(1000, "priority")[1]
    )
    assert flex.reservation(1000, 100, "priority") > flex.reservation(1000, 100)
    assert flex.reservation(1000, 100, "flex") == flex.reservation(1000, 100)


@pytest.mark.parametrize(
    "requested, served, billed",
    [
        ("flex", "flex", "flex"),
        (None, "priority", "priority"),  # the project's default tier, as served
        ("auto", "priority", "priority"),
        ("priority", "default", ""),  # asked for, not given: standard
        ("flex", "standard", ""),
        ("fast", None, "priority"),  # no word from the provider: as asked ("fast" is priority)
        ("PRIORITY", None, "priority"),
        ("FLEX", "Flex", "flex"),
        # a discount only when the provider says so: never on the request's word alone
        ("flex", None, ""),
        ("flex", "scale", ""),  # a tier with no price of its own: as asked, but not a discount
        ("priority", "scale", "priority"),
        ("auto", None, ""),
        ("auto", "scale", ""),
        (None, None, ""),
        ("batch", None, ""),  # the batch API's prices are not a chat request's
        (7, ["priority"], ""),
    ],
)
def test_the_tier_billed_is_the_one_served_else_the_one_asked_for(requested, served, billed):
    assert billed_tier(requested, served) == billed


SHAPES = {  # entries of shapes LiteLLM's map may hold (none today), each priced like LiteLLM
    "two thresholds, the higher setting only input": {
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
        "input_cost_per_token_above_128k_tokens": 3e-6,
        "output_cost_per_token_above_128k_tokens": 5e-6,
        "input_cost_per_token_above_256k_tokens": 4e-6,
    },
    "a table and an above-200k price": {
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
        "input_cost_per_token_above_200k_tokens": 9e-6,
        "tiered_pricing": [
            {"range": [0, 32000], "input_cost_per_token": 1e-6},
            {"range": [32000, 256000], "input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6},
        ],
    },
    "a table whose first row starts above zero, with a gap": {
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
        "tiered_pricing": [
            {"range": [1000, 32000], "input_cost_per_token": 3e-6},
            {"range": [64000.5, 256000], "input_cost_per_token": 5e-6},
        ],
    },
    "a table alone (no base price)": {
        "tiered_pricing": [
            {"range": [0, 32000], "input_cost_per_token": 1e-6, "output_cost_per_token": 3e-6},
            {"range": [32000, 128000], "input_cost_per_token": 2e-6, "output_cost_per_token": 6e-6},
        ],
    },
    "a free output below the threshold": {
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
        "input_cost_per_token_above_200k_tokens": 2e-6,
        "cache_read_input_token_cost": 1e-7,
        "cache_read_input_token_cost_above_200k_tokens": 3e-7,
        "input_cost_per_token_priority": 2e-6,
        "output_cost_per_token_priority": 4e-6,
        "input_cost_per_token_above_200k_tokens_priority": 5e-6,
    },
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shapes_the_map_may_take_are_priced_like_litellm(shape):
    from litellm.litellm_core_utils.llm_cost_calc.utils import _get_token_base_cost
    from litellm.types.utils import Usage

    entry = {"litellm_provider": "openai", **SHAPES[shape]}
    inp, out = base_prices(entry)
    priority = _scaled(_ratio_steps(entry, "priority"), inp, out)
    dep = DeploymentInfo(
        1,
        "m",
        "p",
        "openai",
        "x",
        input_cost=inp,
        output_cost=out,
        context_prices=_scaled(_ratio_steps(entry), inp, out),
        tier_prices={"priority": priority} if priority else {},
    )
    for tier in ("", "priority"):
        for prompt in (1, 500, 1000, 1001, 32000, 32001, 64000, 64001, 130000, 200001, 300000):
            usage = Usage(prompt_tokens=prompt, completion_tokens=1, total_tokens=prompt + 1)
            expected = _get_token_base_cost(entry, usage, tier or None)[:2]
            assert dep.prices(prompt, tier)[:2] == pytest.approx(expected, rel=1e-9), (
                tier,
                prompt,
            )


@pytest.mark.parametrize(
    "bad",
    [
        {"tiered_pricing": [{"range": 32000, "input_cost_per_token": 1e-6}]},
        {"tiered_pricing": [{"range": ["a", None], "input_cost_per_token": 1e-6}]},
        {"tiered_pricing": [{"range": [0, float("inf")], "input_cost_per_token": "x"}]},
        {"tiered_pricing": "nope"},
        {"input_cost_per_token_above_200k_tokens": "bad"},
        {"input_cost_per_token_above_200k_tokens": -1.0},
        {"input_cost_per_token_above_200k_tokens": float("nan")},
    ],
)
def test_an_entry_the_map_gets_wrong_never_breaks_pricing(bad):
    entry = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, **bad}
    for step in _ratio_steps(entry):
        assert all(v is None or v >= 0 for v in step[1:])


def test_the_threshold_is_one_token_over_it_or_at_it_for_xai():
    gpt = catalog_deployment(GPT)
    base = gpt.cost(272_000, 1000)
    assert base == pytest.approx(272_000 * gpt.input_cost + 1000 * gpt.output_cost)
    over = gpt.cost(272_001, 1000)
    # every token of the request, not only those over the threshold, at the dearer price
    assert over == pytest.approx(272_001 * 2 * gpt.input_cost + 1000 * 1.5 * gpt.output_cost)
    xai = catalog_deployment(XAI)
    [(threshold, *_)] = xai.context_prices
    assert xai.prices(threshold + 1) != xai.prices(threshold)  # at the map's threshold itself
    assert xai.prices(threshold) == (xai.input_cost, xai.output_cost, *xai.prices(0)[2:])


def test_an_override_moves_the_dearer_prices_by_the_same_ratio():
    entry = litellm_price_map()[GPT]
    ratio_in = entry["input_cost_per_token_above_272k_tokens"] / entry["input_cost_per_token"]
    ratio_out = entry["output_cost_per_token_above_272k_tokens"] / entry["output_cost_per_token"]
    [(threshold, inp, out, read, write, hour)] = context_prices(GPT, 1e-6, 4e-6)
    assert threshold == 272_000
    assert (inp, out) == (pytest.approx(ratio_in * 1e-6), pytest.approx(ratio_out * 4e-6))
    ratio_read = (
        entry["cache_read_input_token_cost_above_272k_tokens"] / entry["input_cost_per_token"]
    )
    assert read == pytest.approx(ratio_read * 1e-6)
    assert (write, hour) == (None, None)  # OpenAI charges no cache writes: as input
    assert context_prices("a-model-litellm-does-not-price", 1e-6, 1e-6) == ()
    assert context_prices("gpt-4o-mini", 1e-6, 1e-6) == ()  # one price at every size


def test_the_prices_survive_the_trip_to_an_agent_and_back():
    """The agent's configuration document (JSON) carries them; a document from an earlier
    control plane, without them, prices every size at the base prices."""
    from gateway.dataplane.snapshot import OrgInfo, org_from_dict, org_to_dict

    dep = catalog_deployment(CLAUDE)
    org = OrgInfo(id=1, slug="a", deployments={"m": (dep,)})
    again = org_from_dict(orjson.loads(orjson.dumps(org_to_dict(org))))
    assert again == org
    old = org_to_dict(org)
    del old["deployments"]["m"][0]["context_prices"]
    [plain] = org_from_dict(old).deployments["m"]
    assert plain.cost(200_000, 10) == 200_000 * dep.input_cost + 10 * dep.output_cost


# --- through a live gateway ------------------------------------------------------------


@pytest.fixture
def long(acme):
    """acme with an OpenAI-compatible deployment of GPT-5.4 at the catalog's prices."""
    provider = acme.org.providers.get(name="fake")
    services.deployment_save(
        actor=ACTOR, org=acme.org, model_name="gpt-long", provider=provider, upstream_model=GPT
    )
    refresh_snapshot()
    return acme


def post(acme, path, body, anthropic=False, status=200):
    headers = (
        {"x-api-key": acme.raw, "anthropic-version": "2023-06-01"}
        if anthropic
        else {"Authorization": f"Bearer {acme.raw}"}
    )
    out = httpx.post(acme.url + path, json=body, headers=headers, timeout=30)
    assert out.status_code == status, out.text
    return out


def chat(model: str, stream: bool = False, **fields) -> dict:
    """A chat completion's body; streamed with its usage when ``stream``."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def map_cost(prices: str = "", prompt: int = 11, output: int = 5, model: str = GPT) -> float:
    """What ``prompt`` and ``output`` tokens cost at the map's input and output prices named
    with the suffix ``prices`` ("_above_272k_tokens", "_flex"…; "" the base)."""
    entry = litellm_price_map()[model]
    return (
        prompt * entry[f"input_cost_per_token{prices}"]
        + output * entry[f"output_cost_per_token{prices}"]
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("prompt", [272_000, 300_000])
def test_chat_completions_bill_a_long_prompt_at_the_dearer_price(long, stream, prompt):
    long.fake.behaviours[GPT] = Behaviour(prompt_tokens=prompt)
    post(long, "/v1/chat/completions", chat("gpt-long", stream))
    [row] = usage_rows(long.org)
    above = "_above_272k_tokens" if prompt > 272_000 else ""
    assert (row.input_tokens, row.output_tokens) == (prompt, 5)
    assert float(row.cost) == pytest.approx(map_cost(above, prompt), rel=1e-6)


def test_the_responses_api_bills_a_long_prompt_at_the_dearer_price(long):
    long.fake.behaviours[GPT] = Behaviour(prompt_tokens=400_000)
    post(long, "/v1/responses", {"model": "gpt-long", "input": "hi"})
    [row] = usage_rows(long.org)
    assert float(row.cost) == pytest.approx(map_cost("_above_272k_tokens", 400_000), rel=1e-6)


@pytest.mark.parametrize("stream", [False, True])
def test_the_messages_api_bills_cache_parts_of_a_long_prompt_at_the_dearer_prices(
    acme, mode, stream
):
    anthropic_deployment(acme, "claude", CLAUDE)
    acme.fake.behaviours[CLAUDE] = Behaviour(
        prompt_tokens=90_000, cached_tokens=20_000, cache_write_tokens=10_000
    )
    body = {"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    post(acme, "/v1/messages", {**body, "stream": stream}, anthropic=True)
    [row] = usage_rows(acme.org)
    # Anthropic's input_tokens leave the cache out: the prompt is 120,000 tokens, over 100k
    assert (row.input_tokens, row.cached_tokens) == (120_000, 20_000)
    entry = litellm_price_map()[CLAUDE]
    a = "_above_100k_tokens"
    expected = (
        90_000 * entry[f"input_cost_per_token{a}"]
        + 20_000 * entry[f"cache_read_input_token_cost{a}"]
        + 10_000 * entry[f"cache_creation_input_token_cost{a}"]
        + 5 * entry[f"output_cost_per_token{a}"]
    )
    assert float(row.cost) == pytest.approx(expected, rel=1e-6)
    assert float(row.cost) > 2 * catalog_deployment(CLAUDE).prices(0)[0] * 90_000


def test_a_spend_reservation_holds_a_long_prompt_at_the_dearer_price(long):
    """While a prompt the gateway estimates over the threshold is in flight, the spend cap
    holds what it may cost at the dearer price: with a cap between that and its base price,
    a request beside it is refused; once it settles to what it cost, requests go through."""
    from governance import services as gov

    raw = orjson.dumps(
        {
            "model": "gpt-long",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "word " * 180_000}],
        }
    )
    estimate = tokens.estimate_prompt_tokens(raw)
    assert estimate > 272_000
    dep = catalog_deployment(GPT)
    at_base = estimate * dep.input_cost + 10 * dep.output_cost
    assert dep.reservation(estimate, 10) > 1.9 * at_base
    gov.policy_set(actor=ACTOR, org=long.org, monthly_spend_cap_usd=round(1.5 * at_base, 2))
    refresh_snapshot()
    long.fake.behaviours[GPT] = Behaviour(latency=3)
    short = {"model": "gpt-long", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            httpx.post,
            long.url + "/v1/chat/completions",
            content=raw,
            headers={"Authorization": f"Bearer {long.raw}", "Content-Type": "application/json"},
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while not long.fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert long.fake.requests, "the long request never reached the upstream"
        refused = post(long, "/v1/chat/completions", short, status=429)
        assert "spend cap" in refused.json()["error"]["message"]
        assert first.result().status_code == 200
    long.fake.behaviours[GPT] = Behaviour()
    post(long, "/v1/chat/completions", short)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "asked, served, billed",
    [
        ("flex", "echo", "flex"),
        ("priority", "echo", "priority"),
        ("priority", "default", ""),  # asked for, not given: standard
        (None, "priority", "priority"),  # the project's default tier
        ("priority", None, "priority"),  # an upstream that does not say: as asked…
        ("flex", None, ""),  # …unless that is a discount
        ("auto", None, ""),
    ],
)
def test_chat_completions_bill_the_service_tier_served(long, stream, asked, served, billed):
    long.fake.behaviours[GPT] = Behaviour(service_tier=served)
    body = chat("gpt-long", stream, **({"service_tier": asked} if asked is not None else {}))
    post(long, "/v1/chat/completions", body)
    assert long.fake.requests[-1]["body"].get("service_tier") == asked  # passed on as sent
    [row] = usage_rows(long.org)
    assert float(row.cost) == pytest.approx(map_cost(f"_{billed}" if billed else ""), rel=1e-6)


@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api_bills_the_service_tier_served(long, stream):
    long.fake.behaviours[GPT] = Behaviour(service_tier="echo")
    body = {"model": "gpt-long", "input": "hi", "service_tier": "flex", "stream": stream}
    out = httpx.post(
        long.url + "/v1/responses",
        json=body,
        headers={"Authorization": f"Bearer {long.raw}"},
        timeout=30,
    )
    assert out.status_code == 200, out.text
    assert long.fake.requests[-1]["body"].get("service_tier") == "flex"
    [row] = usage_rows(long.org)
    assert float(row.cost) == pytest.approx(map_cost("_flex"), rel=1e-6)


def test_a_long_prompt_in_a_tier_takes_the_tier_s_long_prompt_price(long):
    long.fake.behaviours[GPT] = Behaviour(service_tier="flex", prompt_tokens=300_000)
    post(
        long,
        "/v1/chat/completions",
        {"model": "gpt-long", "messages": [{"role": "user", "content": "hi"}]},
    )
    [row] = usage_rows(long.org)
    expected = map_cost("_above_272k_tokens_flex", 300_000)
    assert float(row.cost) == pytest.approx(expected, rel=1e-6)


def test_a_responses_request_s_tier_is_not_passed_to_a_provider_without_tiers(acme):
    """LiteLLM refuses `service_tier` for providers that have none (Anthropic): the
    translation to chat leaves it out for them, and the request is billed as standard."""
    anthropic_deployment(acme, "claude", CLAUDE)
    out = post(
        acme, "/v1/responses", {"model": "claude", "input": "hi", "service_tier": "priority"}
    )
    assert out.json()["status"] == "completed"
    assert "service_tier" not in acme.fake.requests[-1]["body"]
    [row] = usage_rows(acme.org)
    dep = catalog_deployment(CLAUDE)
    assert float(row.cost) == pytest.approx(dep.cost(row.input_tokens, row.output_tokens), rel=1e-6)


# --- web searches ------------------------------------------------------------------------

SEARCHER = "claude-sonnet-4-5"  # LiteLLM's map prices its web searches ($10 per 1,000)


def test_a_web_search_costs_the_map_s_price_per_search():
    price = litellm_price_map()[SEARCHER]["search_context_cost_per_query"]
    assert search_price(SEARCHER) == price["search_context_size_medium"] > 0
    assert search_price("a-model-litellm-does-not-price") is None
    dep = DeploymentInfo(
        1, "m", "p", "anthropic", SEARCHER, input_cost=1e-6, output_cost=2e-6, search_cost=0.01
    )
    assert dep.cost(100, 10, searches=3) == pytest.approx(100e-6 + 20e-6 + 0.03)
    assert dep.cost(100, 10, searches=-3) == pytest.approx(120e-6)  # never a credit
    assert DeploymentInfo(1, "m", "p", "anthropic", "x", input_cost=1e-6).cost(
        100, 0, searches=3
    ) == pytest.approx(100e-6)  # not priced: tokens only


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["messages", "chat"])
def test_anthropic_s_web_searches_are_billed(acme, mode, path, stream):
    """Anthropic reports the searches its web search tool ran (usage.server_tool_use): the
    Messages API as sent and through LiteLLM, and chat completions through LiteLLM."""
    if path == "chat" and mode != "litellm":
        pytest.skip("chat completions reach an Anthropic deployment through LiteLLM only")
    anthropic_deployment(acme, "claude", SEARCHER)
    acme.fake.behaviours[SEARCHER] = Behaviour(web_searches=2)
    if path == "messages":
        body = {
            "model": "claude",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
        }
        post(acme, "/v1/messages", {**body, "stream": stream}, anthropic=True)
    else:
        out = post(acme, "/v1/chat/completions", chat("claude", stream))
        if not stream:
            assert "server_tool_use" not in out.json()["usage"]  # OpenAI's shape, as before
    [row] = usage_rows(acme.org)
    entry = litellm_price_map()[SEARCHER]
    tokens_cost = (
        row.input_tokens * entry["input_cost_per_token"]
        + row.output_tokens * entry["output_cost_per_token"]
    )
    search = entry["search_context_cost_per_query"]["search_context_size_medium"]
    assert float(row.cost) == pytest.approx(tokens_cost + 2 * search, rel=1e-6)


@pytest.mark.parametrize(
    "traffic, tier",
    [
        ("ON_DEMAND_PRIORITY", "priority"),
        ("ON_DEMAND_FLEX", "flex"),
        ("FLEX", "flex"),
        ("on_demand", "default"),
        ("SOMETHING_NEW", None),
        (None, None),
        (7, None),
    ],
)
def test_gemini_s_traffic_type_through_litellm_is_the_served_tier(traffic, tier):
    """LiteLLM keeps Gemini's usageMetadata.trafficType in its response's hidden params,
    which its dump drops: the adapter keeps it on the usage (never shown to the client)."""
    from litellm.types.utils import ModelResponse

    from gateway.dataplane.snapshot import served_tier
    from gateway.dataplane.upstream import Usage, _traffic_tier, litellm_answer

    resp = ModelResponse(model="gemini-2.5-pro", usage={"prompt_tokens": 3, "completion_tokens": 1})
    if traffic is not None:
        resp._hidden_params = {"provider_specific_fields": {"traffic_type": traffic}}
    assert _traffic_tier(resp) == tier
    data = litellm_answer("chat", resp)
    assert (
        isinstance(data["usage"], Usage) and "tier" not in orjson.loads(orjson.dumps(data))["usage"]
    )
    assert served_tier(data) == tier
    assert billed_tier("priority", served_tier(data)) == {
        "priority": "priority",
        "flex": "flex",
    }.get(tier, "" if tier == "default" else "priority")


def test_an_openai_shaped_upstream_s_search_count_is_read_and_junk_is_none():
    from gateway.dataplane.proxy import _usage_counts

    usage = {"prompt_tokens": 9, "completion_tokens": 1}
    assert _usage_counts({**usage, "server_tool_use": {"web_search_requests": 4}}).searches == 4
    for bad in (True, -3, 2.5, "7", None, [1]):
        counts = _usage_counts({**usage, "server_tool_use": {"web_search_requests": bad}})
        assert counts.searches == 0
    assert _usage_counts({**usage, "server_tool_use": "x"}).searches == 0


# --- audio tokens ------------------------------------------------------------------------

AUDIO = "gpt-audio"  # LiteLLM's map: audio in and out at 16x and 6.4x the text prices


def chat_models_with_audio_prices() -> list[str]:
    return [
        name
        for name, entry in litellm_price_map().items()
        if isinstance(entry, dict)
        and entry.get("mode") == "chat"
        and base_prices(entry)[0]
        and (entry.get("input_cost_per_audio_token") or entry.get("output_cost_per_audio_token"))
    ]


def test_every_chat_model_s_audio_tokens_cost_what_litellm_says():
    from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token
    from litellm.types.utils import (
        CompletionTokensDetailsWrapper,
        PromptTokensDetailsWrapper,
        Usage,
    )

    names = chat_models_with_audio_prices()
    assert (
        len(names) > 40
    )  # gpt-audio, gpt-4o-audio, Gemini, Nova… (what makes this mean something)
    rng = random.Random(5)
    for name in names:
        dep = catalog_deployment(name)
        entry = litellm_price_map()[name]
        tiers = ["", *[t for t in dep.tier_prices if t not in DISCOUNT_TIERS]]
        for tier in tiers:
            for prompt in (40, 5_000):
                cached = rng.randint(0, prompt // 4)
                audio_in = rng.randint(0, prompt - cached)
                output = rng.randint(10, 2_000)
                audio_out = rng.randint(0, output)
                usage = Usage(
                    prompt_tokens=prompt,
                    completion_tokens=output,
                    total_tokens=prompt + output,
                    prompt_tokens_details=PromptTokensDetailsWrapper(
                        cached_tokens=cached, audio_tokens=audio_in
                    ),
                    completion_tokens_details=CompletionTokensDetailsWrapper(
                        audio_tokens=audio_out
                    ),
                )
                # The entry itself: LiteLLM's model-info lookup drops the tier's own audio
                # price (input_cost_per_audio_token_priority), which its calculator reads.
                a, b = generic_cost_per_token(
                    model=name,
                    usage=usage,
                    custom_llm_provider=entry.get("litellm_provider"),
                    service_tier=tier or None,
                    model_info=entry,
                )
                mine = dep.cost(prompt, output, cached, 0, 0, 0, audio_in, audio_out, tier=tier)
                assert mine == pytest.approx(a + b, rel=1e-9, abs=1e-15), (name, tier, prompt)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_bill_audio_tokens_at_the_audio_prices(long, stream):
    provider = long.org.providers.get(name="fake")
    services.deployment_save(
        actor=ACTOR, org=long.org, model_name="voice", provider=provider, upstream_model=AUDIO
    )
    refresh_snapshot()
    long.fake.behaviours[AUDIO] = Behaviour(audio_tokens=(7, 3))
    post(long, "/v1/chat/completions", chat("voice", stream))
    [row] = usage_rows(long.org)
    e = litellm_price_map()[AUDIO]
    expected = (
        4 * e["input_cost_per_token"]
        + 7 * e["input_cost_per_audio_token"]
        + 2 * e["output_cost_per_token"]
        + 3 * e["output_cost_per_audio_token"]
    )
    assert (row.input_tokens, row.output_tokens) == (11, 5)
    assert float(row.cost) == pytest.approx(expected, rel=1e-6)
    assert e["input_cost_per_audio_token"] > 5 * e["input_cost_per_token"]  # it matters


@pytest.mark.parametrize(
    "body, audio",
    [
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, True),
        ({"modalities": ["audio"]}, True),
        ({"audio": {"voice": "alloy"}}, True),
        ({"modalities": ["text"]}, False),
        ({"modalities": "audio"}, False),  # refused by validation; never an audio answer
        ({}, False),
    ],
)
def test_a_spend_reservation_holds_an_audio_answer_at_the_audio_price(body, audio):
    assert tokens.audio_asked(body) is audio
    dep = catalog_deployment(AUDIO)
    e = litellm_price_map()[AUDIO]
    extra = dep.reservation(10, 1_000, audio_out=tokens.audio_asked(body)) - dep.reservation(
        10, 1_000
    )
    expected = 1_000 * (e["output_cost_per_audio_token"] - e["output_cost_per_token"])
    assert extra == pytest.approx(expected if audio else 0.0)
    assert e["output_cost_per_audio_token"] > 3 * e["output_cost_per_token"]  # it matters


def test_an_audio_answer_s_reservation_is_held_while_it_runs(long):
    """A request beside an audio answer that fits the cap beside its text price but not
    beside its audio price is refused while the audio answer runs."""
    from governance import services as gov

    provider = long.org.providers.get(name="fake")
    services.deployment_save(
        actor=ACTOR, org=long.org, model_name="voice", provider=provider, upstream_model=AUDIO
    )
    e = litellm_price_map()[AUDIO]
    # 1,000 output tokens as text cost less than the cap, as audio more
    cap = 1_000 * (e["output_cost_per_token"] + e["output_cost_per_audio_token"]) / 2
    gov.policy_set(actor=ACTOR, org=long.org, monthly_spend_cap_usd=round(cap, 2))
    refresh_snapshot()
    long.fake.behaviours[AUDIO] = Behaviour(latency=2)
    body = {**chat("voice", False), "max_tokens": 1_000}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            post, long, "/v1/chat/completions", {**body, "modalities": ["text", "audio"]}
        )
        time.sleep(0.5)  # the first is admitted and waiting on the provider
        post(long, "/v1/chat/completions", body, status=429)
        assert first.result().status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_the_messages_api_to_a_chat_deployment_bills_the_tier_it_served(long, stream):
    """A Messages request answered by an OpenAI-shaped deployment: the chat answer's
    service_tier is kept through the translation (not shown to the client) and billed."""
    long.fake.behaviours[GPT] = Behaviour(service_tier="priority")
    body = {"model": "gpt-long", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    out = post(long, "/v1/messages", {**body, "stream": stream}, anthropic=True)
    assert "priority" not in out.text  # Anthropic's shape has no such tier
    [row] = usage_rows(long.org)
    assert float(row.cost) == pytest.approx(map_cost("_priority"), rel=1e-6)


SEARCH_MODEL = "gpt-4o-search-preview"  # LiteLLM's map: a search is $0.025 on top
WEB_TOOL_MODEL = "gpt-5"  # the Responses API's web_search tool: $0.01 a call


def _search_deployment(acme, upstream_model: str, kind: str = "openai_compatible") -> str:
    provider = acme.providers["fake"]
    if kind == "openai":  # has a Responses API (passed through)
        provider = openai_provider(acme)
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="searcher",
        provider=provider,
        upstream_model=upstream_model,
    )
    refresh_snapshot()
    return "searcher"


def _search_price(name: str) -> float:
    return litellm_price_map()[name]["search_context_cost_per_query"]["search_context_size_medium"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("cited", [True, False])
def test_an_openai_search_model_s_answer_is_billed_its_search(acme, mode, stream, cited):
    """OpenAI's search models say nothing of their searches in the usage; an answer that
    cites the web (url_citation annotations) is one search, as LiteLLM bills it."""
    model = _search_deployment(acme, SEARCH_MODEL)
    acme.fake.behaviours[SEARCH_MODEL] = Behaviour(cite_web=cited)
    out = post(acme, "/v1/chat/completions", chat(model, stream, web_search_options={}))
    if not stream:
        notes = out.json()["choices"][0]["message"].get("annotations")
        assert bool(notes) == cited  # relayed to the client as sent
    [row] = usage_rows(acme.org)
    search = _search_price(SEARCH_MODEL) if cited else 0.0
    assert float(row.cost) == pytest.approx(map_cost(model=SEARCH_MODEL) + search, rel=1e-6)


@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api_s_web_search_calls_are_billed(acme, stream):
    """The web_search tool on the Responses API (passed through to OpenAI): each
    web_search_call item of the response is a search billed (LiteLLM's count)."""
    model = _search_deployment(acme, WEB_TOOL_MODEL, kind="openai")
    acme.fake.behaviours[WEB_TOOL_MODEL] = Behaviour(web_search_calls=3)
    body = {"model": model, "input": "news?", "tools": [{"type": "web_search"}], "stream": stream}
    out = post(acme, "/v1/responses", body)
    assert acme.fake.requests[-1]["body"]["tools"] == [{"type": "web_search"}]
    if not stream:
        kinds = [item["type"] for item in out.json()["output"]]
        assert kinds.count("web_search_call") == 3
    [row] = usage_rows(acme.org)
    expected = map_cost(model=WEB_TOOL_MODEL) + 3 * _search_price(WEB_TOOL_MODEL)
    assert float(row.cost) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "name", ["gemini-2.5-flash", "gemini/gemini-2.5-pro", "gemini-3.1-pro-preview"]
)
@pytest.mark.parametrize("queries", [0, 1, 4])
def test_gemini_s_grounding_is_billed_as_litellm_bills_it(name, queries):
    """Grounding with Google Search, as LiteLLM reports it on a Gemini answer
    (prompt_tokens_details.web_search_requests): once per grounded prompt (Gemini 2.x), or
    per query where the map says so (Gemini 3). LiteLLM's calculator is the reference."""
    from litellm import get_model_info
    from litellm.llms import get_cost_for_web_search_request
    from litellm.types.utils import ModelResponse, PromptTokensDetailsWrapper
    from litellm.types.utils import Usage as LiteUsage

    from gateway.dataplane.proxy import _usage_counts
    from gateway.dataplane.upstream import litellm_answer
    from gateway.pricing import search_per_prompt

    entry = litellm_price_map().get(name)
    assert entry and entry.get("search_context_cost_per_query"), name
    usage = LiteUsage(
        prompt_tokens=20,
        completion_tokens=3,
        total_tokens=23,
        prompt_tokens_details=PromptTokensDetailsWrapper(web_search_requests=queries or None),
    )
    data = litellm_answer("chat", ModelResponse(model=name, usage=usage))
    counts = _usage_counts(data["usage"])
    assert counts.searches == queries
    assert "web_search_requests" not in orjson.dumps(data).decode()  # not OpenAI's shape
    dep = dataclasses.replace(catalog_deployment(name), search_per_prompt=search_per_prompt(name))
    provider = entry["litellm_provider"]
    info = get_model_info(name, custom_llm_provider=provider)
    expected = get_cost_for_web_search_request(provider, usage, info) or 0.0
    assert dep.cost(*counts) - dep.cost(20, 3) == pytest.approx(expected, rel=1e-9)


def test_the_web_search_tool_is_refused_where_a_search_has_no_price(acme, gw):
    """A deployment with no price per search (not in LiteLLM's map), or one the tool cannot
    reach (a translated provider): refused before any provider call, never unmetered."""
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="own",
        provider=openai_provider(acme),
        upstream_model="my-own-finetune",
        input_price_per_mtok=1,
        output_price_per_mtok=2,
    )
    refresh_snapshot()
    before = len(acme.fake.requests)
    for model in ("own", "chat-small"):
        body = {"model": model, "input": "x", "tools": [{"type": "web_search_preview"}]}
        error = post(acme, "/v1/responses", body, status=400).json()["error"]
        assert error["param"] == "tools[0].type" and error["code"] == "unsupported_value"
    assert len(acme.fake.requests) == before
    for tool in ("file_search", "code_interpreter", "mcp"):  # still refused everywhere
        post(
            acme,
            "/v1/responses",
            {"model": "own", "input": "x", "tools": [{"type": tool}]},
            status=400,
        )


def test_the_spend_reservation_holds_the_searches_a_request_may_run(acme):
    """A search tool's bound (max_uses, max_tool_calls; 5 without one) is held against the
    cap with the tokens while the request runs: a request beside it that fits the cap with
    the first one's tokens but not with its searches is refused."""
    from governance import services as gov

    anthropic_deployment(acme, "claude", SEARCHER)
    gov.policy_set(actor=ACTOR, org=acme.org, monthly_spend_cap_usd=0.02)  # 2 searches' worth
    refresh_snapshot()
    acme.fake.behaviours[SEARCHER] = Behaviour(latency=2, web_searches=0)
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    body = {"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, acme, "/v1/messages", {**body, "tools": [tool]}, True)
        time.sleep(0.5)  # the first is admitted and waiting on the provider
        beside = post(acme, "/v1/messages", body, anthropic=True, status=429)
        assert beside.json()["error"]["type"] == "rate_limit_error"  # Anthropic's shape
        assert first.result().status_code == 200
    post(acme, "/v1/messages", body, anthropic=True)  # settled to what it cost: room again
    assert sorted(r.http_status for r in usage_rows(acme.org)) == [200, 200, 429]


@pytest.mark.parametrize(
    "body, searches",
    [
        ({}, 0),
        ({"web_search_options": {}}, 1),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 0),
        ({"tools": [{"type": "web_search"}]}, tokens.SEARCH_RESERVE),
        ({"tools": [{"type": "web_search"}], "max_tool_calls": 2}, 2),
        ({"tools": [{"type": "web_search_20250305", "max_uses": 7}]}, 7),
        ({"tools": [{"googleSearch": {}}]}, tokens.SEARCH_RESERVE),
        ({"tools": "junk", "web_search_options": 3}, 0),
    ],
)
def test_the_searches_a_request_may_run(body, searches):
    assert tokens.searches_asked(body) == searches
    dep = catalog_deployment(SEARCHER)
    assert dep.reservation(10, 5, searches=searches) - dep.reservation(10, 5) == pytest.approx(
        searches * _search_price(SEARCHER)
    )


@pytest.mark.parametrize(
    "body, unseen",
    [
        ({"messages": [{"role": "user", "content": "a picture of a file"}]}, False),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, False),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            True,
        ),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}, True),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, False),
        ({"input": "go on", "previous_response_id": "resp_1"}, True),
        ({"input": "go on", "conversation": "conv_1"}, True),
        ({"prompt": {"id": "pmpt_1"}}, True),
        ({"prompt": "a legacy completion's prompt"}, False),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, True),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, True),
        (  # an image inside an Anthropic tool result
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "content": [{"type": "image", "source": {"type": "base64"}}],
                            }
                        ],
                    }
                ]
            },
            True,
        ),
        ({"system": [{"type": "text", "text": "describe the image"}], "messages": []}, False),
    ],
)
def test_the_requests_that_point_to_input_their_bytes_do_not_size(body, unseen):
    assert tokens.unseen_input(orjson.dumps(body), body) is unseen


@pytest.mark.django_db
def test_the_snapshot_carries_each_deployment_s_context_window(org_a):
    from gateway import services
    from gateway.snapshot_builder import deployment_info

    provider = services.provider_save(
        actor=ACTOR, org=org_a, name="ant", kind="anthropic", credentials={"api_key": "k"}
    )
    d = services.deployment_save(
        actor=ACTOR, org=org_a, model_name="m", provider=provider, upstream_model=CLAUDE
    )
    assert deployment_info(d).max_input_tokens == litellm_price_map()[CLAUDE]["max_input_tokens"]


def test_a_deployment_knows_its_model_s_context_window_and_an_agent_keeps_it():
    from gateway.dataplane.snapshot import OrgInfo, org_from_dict, org_to_dict
    from gateway.pricing import context_window, litellm_price_map

    assert context_window(CLAUDE) == litellm_price_map()[CLAUDE]["max_input_tokens"] > 0
    assert context_window("a-model-the-map-lacks") == 0
    dep = dataclasses.replace(catalog_deployment(CLAUDE), max_input_tokens=context_window(CLAUDE))
    org = OrgInfo(id=1, slug="a", deployments={"m": (dep,)})
    assert org_from_dict(orjson.loads(orjson.dumps(org_to_dict(org)))) == org


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_a_search_model_s_search_is_billed_on_every_api(acme, mode, path, stream):
    """Its answer translated to the Messages or the Responses API still carries its one
    search (its citations are read before the translation)."""
    model = _search_deployment(acme, SEARCH_MODEL)
    acme.fake.behaviours[SEARCH_MODEL] = Behaviour(cite_web=True)
    if path == "/v1/messages":
        body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        out = post(acme, path, {**body, "stream": stream}, anthropic=True)
        if not stream:
            assert out.json()["usage"]["server_tool_use"] == {"web_search_requests": 1}
    else:
        post(acme, path, {"model": model, "input": "news?", "stream": stream})
    [row] = usage_rows(acme.org)
    assert float(row.cost) == pytest.approx(
        map_cost(model=SEARCH_MODEL) + _search_price(SEARCH_MODEL), rel=1e-6
    )


def test_searches_streamed_before_a_client_leaves_are_billed(acme):
    """The Responses API's web_search_call items stream before the answer: a client that
    leaves before response.completed still pays for the searches the provider ran."""
    model = _search_deployment(acme, WEB_TOOL_MODEL, kind="openai")
    acme.fake.behaviours[WEB_TOOL_MODEL] = Behaviour(
        web_search_calls=2, stream_chunks=50, chunk_delay=0.05
    )
    body = {"model": model, "input": "news?", "tools": [{"type": "web_search"}], "stream": True}
    with httpx.stream(
        "POST",
        acme.base_url + "/responses",
        json=body,
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if "output_text.delta" in line:
                break  # searches seen, then gone
    deadline = time.monotonic() + 10
    while not (rows := usage_rows(acme.org)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = rows
    assert row.http_status == 499
    assert float(row.cost) >= 2 * _search_price(WEB_TOOL_MODEL)


def test_a_chat_search_model_stream_left_early_bills_its_search(acme):
    """web_search_options (only search models take it) was searched before the first
    token: a client gone before the citations arrive still pays for it."""
    model = _search_deployment(acme, SEARCH_MODEL)
    acme.fake.behaviours[SEARCH_MODEL] = Behaviour(
        cite_web=True, stream_chunks=50, chunk_delay=0.05
    )
    with httpx.stream(
        "POST",
        acme.base_url + "/chat/completions",
        json=chat(model, True, web_search_options={}),
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if "word2" in line:
                break
    deadline = time.monotonic() + 10
    while not (rows := usage_rows(acme.org)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = rows
    assert row.http_status == 499 and float(row.cost) >= _search_price(SEARCH_MODEL)


UNPRICED_SEARCHER = "claude-haiku-4-5-20251001"  # token prices, no price per search


@pytest.mark.parametrize("path", ["chat", "messages"])
def test_a_search_is_refused_where_it_has_no_price(acme, path):
    entry = litellm_price_map()[UNPRICED_SEARCHER]
    assert entry.get("input_cost_per_token") and not entry.get("search_context_cost_per_query")
    anthropic_deployment(acme, "claude", UNPRICED_SEARCHER)
    if path == "chat":
        out = post(acme, "/v1/chat/completions", chat("claude", web_search_options={}), status=400)
        assert out.json()["error"]["param"] == "web_search_options"
    else:
        body = {
            "model": "claude",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {"type": "function", "name": "f"},
                {"type": "web_search_20250305", "name": "web_search"},
            ],
        }
        out = post(acme, "/v1/messages", body, anthropic=True, status=400)
        assert "price per search" in out.json()["error"]["message"]
    assert acme.fake.requests == []


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_a_search_model_s_search_is_billed_when_it_reports_no_usage(acme, path):
    model = _search_deployment(acme, SEARCH_MODEL)
    acme.fake.behaviours[SEARCH_MODEL] = Behaviour(cite_web=True, report_usage=False)
    if path == "/v1/messages":
        body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        post(acme, path, body, anthropic=True)
    else:
        post(acme, path, {"model": model, "input": "news?"})
    [row] = usage_rows(acme.org)
    entry = litellm_price_map()[SEARCH_MODEL]
    tokens_cost = (
        row.input_tokens * entry["input_cost_per_token"]
        + row.output_tokens * entry["output_cost_per_token"]
    )
    assert float(row.cost) == pytest.approx(tokens_cost + _search_price(SEARCH_MODEL), rel=1e-6)
