"""The new /v1 APIs' bodies validate against OpenAI's published OpenAPI spec, on both
provider paths: the Responses API (passed through and translated; the final response of a
stream too), images, transcriptions (json and verbose_json) and moderations."""

import httpx
import orjson
import pytest

from gateway.tests.openai_schema import assert_openai_schema
from gateway.tests.test_media_api import make_wav, studio  # noqa: F401 (a fixture)
from gateway.tests.test_responses_api import oai  # noqa: F401 (a fixture)


def _post(acme, path, **kw):
    return httpx.post(
        f"{acme.base_url}/{path}",
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=60,
        **kw,
    )


@pytest.mark.parametrize("model", ["gpt", "chat-small"])  # passed through / translated
def test_a_response_validates(oai, mode, model):  # noqa: F811
    response = _post(oai, "responses", json={"model": model, "input": "hi"})
    assert response.status_code == 200, response.text
    assert_openai_schema(response.json(), "Response")


@pytest.mark.parametrize("model", ["gpt", "chat-small"])
def test_a_streamed_responses_final_response_validates(oai, mode, model):  # noqa: F811
    with httpx.stream(
        "POST",
        f"{oai.base_url}/responses",
        headers={"Authorization": f"Bearer {oai.raw}"},
        json={"model": model, "input": "hi", "stream": True},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        events = [
            orjson.loads(line[len("data: ") :])
            for line in response.iter_lines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
    done = [e for e in events if e["type"] == "response.completed"]
    assert len(done) == 1 and events[-1] is done[0]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert_openai_schema(done[0]["response"], "Response")


def test_images_validate(studio, mode):  # noqa: F811
    response = _post(studio, "images/generations", json={"model": "painter", "prompt": "a cat"})
    assert response.status_code == 200, response.text
    assert_openai_schema(response.json(), "ImagesResponse")


@pytest.mark.parametrize(
    "fmt, schema",
    [
        ("json", "CreateTranscriptionResponseJson"),
        ("verbose_json", "CreateTranscriptionResponseVerboseJson"),
    ],
)
def test_transcripts_validate(studio, mode, fmt, schema):  # noqa: F811
    response = _post(
        studio,
        "audio/transcriptions",
        data={"model": "scribe", "response_format": fmt},
        files={"file": ("a.wav", make_wav(0.5), "audio/wav")},
    )
    assert response.status_code == 200, response.text
    assert_openai_schema(response.json(), schema)


def test_moderations_validate(studio, mode):  # noqa: F811
    response = _post(studio, "moderations", json={"model": "guard", "input": "hello"})
    assert response.status_code == 200, response.text
    assert_openai_schema(response.json(), "CreateModerationResponse")
