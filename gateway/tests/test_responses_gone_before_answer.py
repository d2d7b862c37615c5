"""A /v1/responses request only a Responses API serves (here a conversation), whose
client leaves before the answer begins, bills the input the provider was reading: counted
from the request as sent (count_native_input), not from its chat translation, which it
has none of (it billed 0 input tokens)."""

import time

import pytest

from gateway import services
from gateway.tests.conftest import ACTOR, openai_provider, refresh_snapshot
from gateway.tests.fake_upstream import Behaviour
from gateway.tests.test_client_gone_before_answer import leave_after, the_row

ASK = "Summarise the attached quarterly report in three bullet points for the board."


@pytest.mark.parametrize("stream", [False, True])
def test_it_bills_the_input_of_a_pass_through_request_the_client_left(acme, gw, stream):
    services.deployment_save(
        actor=ACTOR,
        org=acme.org,
        model_name="gpt",
        provider=openai_provider(acme),
        upstream_model="gpt-slow",
        input_price_per_mtok=1,
        output_price_per_mtok=2,
    )
    refresh_snapshot()
    acme.fake.behaviours["gpt-slow"] = Behaviour(latency=1.5)
    body = {"model": "gpt", "conversation": "conv_1", "input": ASK, "stream": stream}
    leave_after(acme.url, "/v1/responses", body, acme.raw, 0.4)
    [row] = the_row(acme, "responses")
    assert (row.status, row.http_status, row.error_type) == ("error", 499, "client_disconnected")
    assert row.input_tokens >= 10 and row.output_tokens == 0
    assert float(row.cost) > 0
    time.sleep(1.5)  # the fake's answer, after the row: nothing else is written
    assert len(the_row(acme, "responses")) == 1
