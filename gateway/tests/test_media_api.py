"""Images, audio, moderations and rerank on /v1: the official SDK (and httpx for rerank)
against a live gateway, through both provider paths; priced by the unit, recorded once."""

import io
import math
import socket
import struct
import wave
from decimal import Decimal
from types import SimpleNamespace

import httpx
import openai
import pytest

from gateway import services
from gateway.dataplane import media
from gateway.tests.conftest import ACTOR, refresh_snapshot, usage_rows
from gateway.tests.fake_upstream import Behaviour

# LiteLLM's bundled prices (its local cost map) for the upstream models below.
WHISPER_PER_SECOND = 0.0001
TTS_PER_CHARACTER = 1.5e-05
GPT_IMAGE_1 = {"medium/1024x1024": 0.042, "high/1536x1024": 0.25, "low/1024x1536": 0.016}
RERANK_PER_QUERY = 0.002


def client(acme, key=None):
    return openai.OpenAI(base_url=acme.base_url, api_key=key or acme.raw, max_retries=0, timeout=20)


def make_wav(seconds: float, rate: int = 16000) -> bytes:
    """A real mono 16-bit PCM WAV of a 440 Hz tone."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = int(seconds * rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                for i in range(frames)
            )
        )
    return out.getvalue()


@pytest.fixture
def studio(acme):
    """Acme with image, audio, moderation and rerank models on the fake upstream."""
    fake = acme.providers["fake"]

    def deploy(name, upstream, **kw):
        return services.deployment_save(
            actor=ACTOR, org=acme.org, model_name=name, provider=fake, upstream_model=upstream, **kw
        )

    deps = {
        "painter": deploy("painter", "gpt-image-1"),
        "sketcher": deploy("sketcher", "house-image-model", unit_price="0.05"),
        "scribe": deploy("scribe", "whisper-1"),
        "voice": deploy("voice", "tts-1"),
        "guard": deploy("guard", "omni-moderation-latest"),
        "ranker": deploy("ranker", "rerank-english-v3.0"),
    }
    refresh_snapshot()
    return SimpleNamespace(**vars(acme), media=deps)


def only_row(acme):
    [row] = usage_rows(acme.org)
    return row


def money(value) -> Decimal:
    return Decimal(str(round(value, 8)))


# ------------------------------------------------------------------ images
@pytest.mark.parametrize(
    "quality,size,n",
    [("medium", "1024x1024", 1), ("high", "1536x1024", 2), ("low", "1024x1536", 3)],
)
def test_images_are_priced_per_image_by_quality_and_size(studio, mode, quality, size, n):
    response = client(studio).images.generate(
        model="painter", prompt="a bonito fish", n=n, size=size, quality=quality
    )
    assert len(response.data) == n
    sent = studio.fake.requests[-1]
    assert sent["endpoint"] == "images" and sent["body"]["model"] == "gpt-image-1"
    assert sent["body"]["prompt"] == "a bonito fish" and sent["body"]["n"] == n
    assert sent["headers"]["Authorization"] == "Bearer sk-fake-upstream-credential"
    row = only_row(studio)
    assert (row.endpoint, row.status, row.model_requested, row.unit) == (
        "images",
        "success",
        "painter",
        "image",
    )
    assert row.units == n
    assert row.cost == money(n * GPT_IMAGE_1[f"{quality}/{size}"])


def test_a_deployments_own_unit_price_beats_the_catalog(studio, mode):
    response = client(studio).images.generate(model="sketcher", prompt="x", n=2)
    assert len(response.data) == 2
    row = only_row(studio)
    assert (row.units, row.unit, row.cost) == (2, "image", money(0.10))


# ------------------------------------------------------------------ audio
def test_transcription_is_priced_per_second_of_the_wav(studio, mode):
    audio = make_wav(2.5)
    result = client(studio).audio.transcriptions.create(
        model="scribe", file=("hello.wav", audio, "audio/wav"), language="en"
    )
    assert result.text == "transcript of hello.wav"
    sent = studio.fake.requests[-1]
    assert sent["content_type"] == "multipart/form-data"
    assert sent["body"]["model"] == "whisper-1" and sent["body"]["language"] == "en"
    assert sent["body"]["file"]["size"] == len(audio)
    assert sent["body"]["file"]["filename"] == "hello.wav"
    row = only_row(studio)
    assert (row.endpoint, row.units, row.unit) == ("transcriptions", 2.5, "second")
    assert row.cost == money(2.5 * WHISPER_PER_SECOND)


def test_transcription_takes_the_upstreams_duration_when_it_says_one(studio, mode):
    studio.fake.behaviours["whisper-1"] = Behaviour(duration=7.25)
    result = client(studio).audio.transcriptions.create(
        model="scribe",
        file=("a.wav", make_wav(1.0), "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    assert result.duration == 7.25
    assert studio.fake.requests[-1]["body"]["timestamp_granularities[]"] == ["segment"]
    row = only_row(studio)
    assert (row.units, row.cost) == (7.25, money(7.25 * WHISPER_PER_SECOND))


@pytest.mark.parametrize("fmt,expected", [("text", "transcript of a.wav\n"), ("srt", "-->")])
def test_plain_text_transcripts_are_relayed_as_text(studio, mode, fmt, expected):
    response = httpx.post(
        studio.base_url + "/audio/transcriptions",
        headers={"Authorization": f"Bearer {studio.raw}"},
        data={"model": "scribe", "response_format": fmt},
        files={"file": ("a.wav", make_wav(1.0), "audio/wav")},
        timeout=20,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert expected in response.text
    assert only_row(studio).units == 1.0


def test_translation_passes_through(studio):
    result = client(studio).audio.translations.create(
        model="scribe", file=("fr.wav", make_wav(1.5), "audio/wav")
    )
    assert result.text == "transcript of fr.wav"
    assert studio.fake.requests[-1]["endpoint"] == "translations"
    row = only_row(studio)
    assert (row.endpoint, row.units, row.cost) == (
        "translations",
        1.5,
        money(1.5 * WHISPER_PER_SECOND),
    )


def test_speech_streams_the_audio_bytes(studio, mode):
    text = "Hello from Bonito."
    with client(studio).audio.speech.with_streaming_response.create(
        model="voice", voice="alloy", input=text, response_format="mp3"
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        audio = b"".join(response.iter_bytes())
    assert len(audio) == 1024 * len(text) and audio.startswith(b"ID3")
    assert studio.fake.requests[-1]["body"]["voice"] == "alloy"
    row = only_row(studio)
    assert (row.endpoint, row.status, row.units, row.unit) == (
        "speech",
        "success",
        len(text),
        "character",
    )
    assert row.cost == money(len(text) * TTS_PER_CHARACTER)


# ------------------------------------------------------------------ moderations, rerank
def test_moderations(studio, mode):
    result = client(studio).moderations.create(
        model="guard", input=["a nice day", "I will kill the process"]
    )
    assert [r.flagged for r in result.results] == [False, True]
    row = only_row(studio)
    assert (row.endpoint, row.status, row.unit, row.cost) == ("moderations", "success", "", 0)
    assert row.input_tokens > 0  # the text was counted: the tpm limit and the row see it


def test_rerank_in_cohere_shape(studio, mode):
    response = httpx.post(
        studio.base_url + "/rerank",
        headers={"Authorization": f"Bearer {studio.raw}"},
        json={
            "model": "ranker",
            "query": "fast fish",
            "documents": ["slow cow", {"text": "a fast fish"}, "fish"],
            "top_n": 2,
            "return_documents": True,
        },
        timeout=20,
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert [r["index"] for r in data["results"]] == [1, 2]
    assert data["results"][0]["relevance_score"] == 1.0
    assert data["results"][0]["document"] == {"text": "a fast fish"}
    sent = studio.fake.requests[-1]["body"]
    assert sent["model"] == "rerank-english-v3.0" and sent["top_n"] == 2
    row = only_row(studio)
    assert (row.endpoint, row.units, row.unit, row.cost) == (
        "rerank",
        1,
        "query",
        money(RERANK_PER_QUERY),
    )


# ------------------------------------------------------------------ failover, limits, money
def test_an_upload_fails_over_to_the_next_deployment_with_its_file(studio, mode):
    services.deployment_save(
        actor=ACTOR,
        org=studio.org,
        model_name="scribe",
        provider=studio.providers["fake2"],
        upstream_model="whisper-backup",
        priority=1,
    )
    refresh_snapshot()
    studio.fake.behaviours["whisper-1"] = Behaviour(status=500)
    audio = make_wav(1.0)
    result = client(studio).audio.transcriptions.create(
        model="scribe", file=("b.wav", audio, "audio/wav")
    )
    assert result.text == "transcript of b.wav"
    tried = [r["body"]["model"] for r in studio.fake.requests]
    assert tried[0] == "whisper-1" and tried[-1] == "whisper-backup"
    assert studio.fake.requests[-1]["body"]["file"]["size"] == len(audio)  # sent whole again
    row = only_row(studio)  # one row for the request, however many attempts
    assert (row.status, row.deployment, row.units) == ("success", "fake2/whisper-backup", 1.0)


def test_a_provider_4xx_on_media_is_passed_through(studio, mode):
    studio.fake.behaviours["gpt-image-1"] = Behaviour(
        status=400, error_message="Your prompt was rejected", error_code="content_policy_violation"
    )
    with pytest.raises(openai.BadRequestError, match="prompt was rejected"):
        client(studio).images.generate(model="painter", prompt="x")
    row = only_row(studio)
    assert (row.status, row.http_status, row.cost) == ("rejected", 400, 0)


def test_the_key_rpm_limit_counts_media_requests(studio):
    from gateway.models import ApiKey

    ApiKey.objects.filter(pk=studio.key.pk).update(rpm_limit=2)
    refresh_snapshot()
    for _ in range(2):
        client(studio).moderations.create(model="guard", input="hi")
    with pytest.raises(openai.RateLimitError):
        client(studio).images.generate(model="painter", prompt="x")
    assert [r.status for r in usage_rows(studio.org)] == ["success", "success", "rejected"]
    assert len(studio.fake.requests) == 2


def test_the_spend_cap_reserves_an_estimate_and_settles_the_real_cost(studio):
    """A non-WAV upload reserves its length at 16 kbit/s (10 s for 20,000 bytes), then
    settles to the duration the upstream reports (1 s): the cap sees the real spend."""
    from governance import services as gov

    services.deployment_save(
        actor=ACTOR,
        org=studio.org,
        model_name="scribe",
        provider=studio.providers["fake"],
        upstream_model="whisper-1",
        unit_price="0.1",
        deployment=studio.media["scribe"],
    )
    gov.policy_set(actor=ACTOR, org=studio.org, monthly_spend_cap_usd=Decimal("0.35"))
    refresh_snapshot()
    studio.fake.behaviours["whisper-1"] = Behaviour(duration=1.0)
    statuses = []
    for _ in range(6):
        try:
            client(studio).audio.transcriptions.create(
                model="scribe",
                file=("a.mp3", b"\xff\xfb" + b"\x00" * 19998, "audio/mpeg"),
                response_format="verbose_json",
            )
            statuses.append(200)
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "spend_cap_exceeded"
            statuses.append(429)
    # Unsettled, the 10 s reservation would have refused the second request.
    assert statuses == [200, 200, 200, 200, 429, 429]
    rows = usage_rows(studio.org)
    assert sum(r.cost for r in rows) == Decimal("0.40")
    assert [r.units for r in rows if r.status == "success"] == [1.0] * 4


def test_speech_left_by_the_client_is_recorded_as_499(studio):
    import time

    studio.fake.behaviours["tts-1"] = Behaviour(stream_chunks=50, chunk_delay=0.1)
    text = "a long story " * 20
    with httpx.stream(
        "POST",
        studio.base_url + "/audio/speech",
        headers={"Authorization": f"Bearer {studio.raw}"},
        json={"model": "voice", "voice": "alloy", "input": text},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        first = next(response.iter_raw())
        assert first
    deadline = time.time() + 10
    while time.time() < deadline and not usage_rows(studio.org):
        time.sleep(0.05)
    row = only_row(studio)
    assert (row.status, row.http_status, row.error_type) == ("error", 499, "client_disconnected")
    assert (row.units, row.cost) == (len(text), money(len(text) * TTS_PER_CHARACTER))


def test_the_built_in_mock_says_it_serves_no_media(studio):
    mock = services.provider_save(actor=ACTOR, org=studio.org, name="mocky", kind="mock")
    services.deployment_save(
        actor=ACTOR, org=studio.org, model_name="mock-img", provider=mock, upstream_model="m"
    )
    refresh_snapshot()
    with pytest.raises(openai.BadRequestError) as info:
        client(studio).images.generate(model="mock-img", prompt="x")
    assert info.value.body["code"] == "unsupported_endpoint"


# ------------------------------------------------------------------ refusals
def _valid(endpoint: str) -> dict:
    """httpx keyword arguments of a valid request to each media endpoint."""
    files = {"file": ("a.wav", make_wav(0.2), "audio/wav")}
    return {
        "images": {"json": {"model": "painter", "prompt": "x"}},
        "transcriptions": {"data": {"model": "scribe"}, "files": files},
        "translations": {"data": {"model": "scribe"}, "files": files},
        "speech": {"json": {"model": "voice", "voice": "alloy", "input": "hi"}},
        "moderations": {"json": {"model": "guard", "input": "hi"}},
        "rerank": {"json": {"model": "ranker", "query": "q", "documents": ["d"]}},
    }[endpoint]


PATHS = {
    "images": "/images/generations",
    "transcriptions": "/audio/transcriptions",
    "translations": "/audio/translations",
    "speech": "/audio/speech",
    "moderations": "/moderations",
    "rerank": "/rerank",
}


def post(acme, endpoint, key=None, **kwargs):
    return httpx.post(
        acme.base_url + PATHS[endpoint],
        headers={"Authorization": f"Bearer {key or acme.raw}", **kwargs.pop("headers", {})},
        timeout=30,
        **kwargs,
    )


def assert_openai_error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("endpoint", sorted(PATHS))
def test_a_valid_request_to_each_endpoint_succeeds(studio, endpoint):
    assert post(studio, endpoint, **_valid(endpoint)).status_code == 200
    assert only_row(studio).endpoint == endpoint


@pytest.mark.parametrize("endpoint", sorted(PATHS))
def test_a_wrong_key_is_401_and_records_nothing(studio, endpoint):
    response = post(studio, endpoint, key="bn-not-a-real-key", **_valid(endpoint))
    assert_openai_error(response, 401, "invalid_api_key")
    assert studio.fake.requests == [] and usage_rows() == []


@pytest.mark.parametrize("endpoint", sorted(PATHS))
def test_another_orgs_model_is_404(studio, endpoint, org_b):
    other = services.provider_save(
        actor=ACTOR, org=org_b, name="theirs", kind="openai_compatible", api_base=studio.fake.url
    )
    model = _valid(endpoint).get("json", _valid(endpoint).get("data"))["model"]
    services.deployment_save(
        actor=ACTOR, org=org_b, model_name="their-" + model, provider=other, upstream_model="x"
    )
    refresh_snapshot()
    kwargs = _valid(endpoint)
    fields = kwargs.get("json") or kwargs.get("data")
    fields["model"] = "their-" + model
    assert_openai_error(post(studio, endpoint, **kwargs), 404, "model_not_found", "model")
    assert studio.fake.requests == []
    assert usage_rows(org_b) == []
    assert [r.http_status for r in usage_rows(studio.org)] == [404]


BAD_JSON = [
    ("images", {"model": "painter"}, "prompt", "missing_required_parameter"),
    ("images", {"model": "painter", "prompt": ""}, "prompt", "empty_string"),
    ("images", {"model": "painter", "prompt": 7}, "prompt", "invalid_type"),
    ("images", {"model": "painter", "prompt": "x", "n": 0}, "n", "integer_below_min_value"),
    ("images", {"model": "painter", "prompt": "x", "n": 11}, "n", "integer_above_max_value"),
    ("images", {"model": "painter", "prompt": "x", "n": "2"}, "n", "invalid_type"),
    ("images", {"model": "painter", "prompt": "x", "size": 5}, "size", "invalid_type"),
    (
        "images",
        {"model": "painter", "prompt": "x", "response_format": "gif"},
        "response_format",
        "invalid_value",
    ),
    ("images", {"model": "painter", "prompt": "x", "stream": True}, "stream", "unsupported_value"),
    (
        "images",
        {"model": "painter", "prompt": "x", "api_base": "http://evil"},
        "api_base",
        "forbidden_parameter",
    ),
    ("images", {"prompt": "x"}, "model", "missing_required_parameter"),
    ("speech", {"model": "voice", "voice": "alloy"}, "input", "missing_required_parameter"),
    (
        "speech",
        {"model": "voice", "voice": "alloy", "input": "x" * 4097},
        "input",
        "string_above_max_length",
    ),
    ("speech", {"model": "voice", "voice": 3, "input": "x"}, "voice", "invalid_type"),
    (
        "speech",
        {"model": "voice", "voice": "alloy", "input": "x", "speed": 9},
        "speed",
        "decimal_above_max_value",
    ),
    (
        "speech",
        {"model": "voice", "voice": "alloy", "input": "x", "response_format": "midi"},
        "response_format",
        "invalid_value",
    ),
    (
        "speech",
        {"model": "voice", "voice": "alloy", "input": "x", "stream_format": "sse"},
        "stream_format",
        "invalid_value",
    ),
    ("moderations", {"model": "guard"}, "input", "missing_required_parameter"),
    ("moderations", {"model": "guard", "input": 5}, "input", "invalid_type"),
    ("moderations", {"model": "guard", "input": []}, "input", "empty_array"),
    (
        "moderations",
        {"model": "guard", "input": [{"text": "no type"}]},
        "input[0].type",
        "missing_required_parameter",
    ),
    ("rerank", {"model": "ranker", "query": "q"}, "documents", "missing_required_parameter"),
    ("rerank", {"model": "ranker", "documents": ["d"]}, "query", "missing_required_parameter"),
    ("rerank", {"model": "ranker", "query": "q", "documents": []}, "documents", "empty_array"),
    ("rerank", {"model": "ranker", "query": "q", "documents": [3]}, "documents[0]", "invalid_type"),
    (
        "rerank",
        {"model": "ranker", "query": "q", "documents": [{"title": "t"}]},
        "documents[0].text",
        "missing_required_parameter",
    ),
    (
        "rerank",
        {"model": "ranker", "query": "q", "documents": ["d"], "top_n": 0},
        "top_n",
        "integer_below_min_value",
    ),
    (
        "rerank",
        {"model": "ranker", "query": "q", "documents": ["d"], "return_documents": "yes"},
        "return_documents",
        "invalid_type",
    ),
]


@pytest.mark.parametrize("endpoint,body,param,code", BAD_JSON)
def test_bad_json_fields_are_400_naming_the_field(studio, endpoint, body, param, code):
    assert_openai_error(post(studio, endpoint, json=body), 400, code, param)
    assert studio.fake.requests == []
    assert [(r.status, r.http_status) for r in usage_rows(studio.org)] == [("rejected", 400)]


@pytest.mark.parametrize("endpoint", sorted(set(PATHS) - media.UPLOAD_ENDPOINTS))
@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"x"', b"\xff\xfe", b'{"model": "x"' * 3])
def test_a_body_that_is_not_a_json_object_is_400(studio, endpoint, raw):
    response = post(studio, endpoint, content=raw, headers={"Content-Type": "application/json"})
    assert_openai_error(response, 400)
    assert studio.fake.requests == []


B = "bnd"


def _form(*parts, closing=True) -> bytes:
    out = b""
    for headers, value in parts:
        out += f"--{B}\r\n".encode() + headers.encode() + b"\r\n\r\n" + value + b"\r\n"
    return out + (f"--{B}--\r\n".encode() if closing else b"")


def _field(name, value: bytes | str):
    value = value.encode() if isinstance(value, str) else value
    return (f'Content-Disposition: form-data; name="{name}"', value)


def _file(data: bytes, name="file", filename="a.wav"):
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: audio/wav",
        data,
    )


WAV = make_wav(0.1)
MULTIPART = f"multipart/form-data; boundary={B}"
BAD_UPLOADS = [
    ("application/json", b'{"model": "scribe"}', None, "invalid_content_type"),
    (
        "multipart/form-data",
        _form(_field("model", "scribe"), _file(WAV)),
        None,
        "invalid_multipart",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), closing=False),
        None,
        "invalid_multipart",
    ),
    (MULTIPART, b"this is not multipart at all", None, "invalid_multipart"),
    (MULTIPART, _form(("X-Nothing: here", b"v"), _file(WAV)), None, "invalid_multipart"),
    (MULTIPART, _form(_field("model", "scribe")), "file", "missing_required_parameter"),
    (MULTIPART, _form(_field("model", "scribe"), _field("file", WAV)), "file", "invalid_type"),
    (MULTIPART, _form(_field("model", "scribe"), _file(b"")), "file", "empty_file"),
    (MULTIPART, _form(_field("model", "scribe"), _file(WAV), _file(WAV)), "file", "invalid_value"),
    (MULTIPART, _form(_file(WAV)), "model", "missing_required_parameter"),
    (MULTIPART, _form(_file(WAV, name="model"), _file(WAV)), "model", "invalid_type"),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("colour", "red")),
        "colour",
        "unknown_parameter",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("api_base", "http://x")),
        "api_base",
        "forbidden_parameter",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("response_format", "mp4")),
        "response_format",
        "invalid_value",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("temperature", "hot")),
        "temperature",
        "invalid_value",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("temperature", "1.5")),
        "temperature",
        "invalid_value",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("timestamp_granularities[]", "char")),
        "timestamp_granularities[]",
        "invalid_value",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("prompt", b"\xff\xfe")),
        "prompt",
        "invalid_type",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("prompt", "p" * 40000)),
        "prompt",
        "invalid_value",
    ),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), _field("stream", "true")),
        "stream",
        "unsupported_value",
    ),
    (MULTIPART, _form(_field("model", "scri\x01be"), _file(WAV)), "model", "invalid_value"),
    (
        MULTIPART,
        _form(_field("model", "scribe"), _file(WAV), *[_field("prompt", "p")] * 40),
        None,
        "invalid_multipart",
    ),
]


@pytest.mark.parametrize("content_type,raw,param,code", BAD_UPLOADS)
def test_bad_uploads_are_400_naming_what_is_wrong(studio, content_type, raw, param, code):
    response = post(studio, "transcriptions", content=raw, headers={"Content-Type": content_type})
    assert_openai_error(response, 400, code, param)
    assert studio.fake.requests == []
    assert [(r.status, r.http_status) for r in usage_rows(studio.org)] == [("rejected", 400)]


def test_mangled_uploads_are_never_a_500(studio):
    """Every cut and every flipped byte of a valid upload: a 200 or an OpenAI-shaped 400."""
    import random

    rng = random.Random(18)
    good = _form(_field("model", "scribe"), _field("language", "en"), _file(WAV[:200]))
    seen = set()
    for i in range(120):
        raw = bytearray(good)
        if i % 2:
            raw = raw[: rng.randrange(len(raw))]
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.choice(b'\r\n-"; =\x00\xffab')
        response = post(
            studio, "transcriptions", content=bytes(raw), headers={"Content-Type": MULTIPART}
        )
        assert response.status_code in (200, 400), (bytes(raw), response.text)
        if response.status_code == 400:
            assert_openai_error(response, 400)
        seen.add(response.status_code)
    assert seen == {200, 400}
    assert len(usage_rows(studio.org)) == 120  # each request with a valid key: one row


# ------------------------------------------------------------------ upload size
def test_an_upload_declaring_more_than_the_cap_is_413_before_its_body_is_read(studio):
    """The gateway answers on the headers alone: this client never sends a body byte."""
    host, port = studio.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                "POST /v1/audio/transcriptions HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                f"Authorization: Bearer {studio.raw}\r\n"
                f"Content-Type: {MULTIPART}\r\n"
                f"Content-Length: {media.MAX_UPLOAD_BYTES + 1}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(65536)  # a timeout here: the gateway waited for the body
            if not piece:
                break
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b'"request_too_large"' in body and str(media.MAX_UPLOAD_BYTES).encode() in body
    assert studio.fake.requests == []
    [row] = usage_rows(studio.org)
    assert (row.status, row.http_status, row.endpoint) == ("rejected", 413, "transcriptions")


def test_a_chunked_upload_going_over_the_cap_is_413(studio):
    sent = 0

    def chunks():
        nonlocal sent
        yield f"--{B}\r\n".encode() + _file(b"")[0].encode() + b"\r\n\r\n"
        for _ in range(media.MAX_UPLOAD_BYTES // (1 << 20) + 3):
            sent += 1 << 20
            yield b"\x00" * (1 << 20)

    try:
        response = post(
            studio, "transcriptions", content=chunks(), headers={"Content-Type": MULTIPART}
        )
        assert_openai_error(response, 413, "request_too_large")
    except httpx.WriteError:
        pass  # the gateway answered and closed while the client was still sending
    assert studio.fake.requests == []
    [row] = usage_rows(studio.org)
    assert (row.status, row.http_status) == ("rejected", 413)


def test_an_audio_file_over_25_mb_in_a_body_under_the_cap_is_413(studio):
    raw = _form(_field("model", "scribe"), _file(b"\x00" * (media.MAX_AUDIO_FILE_BYTES + 1)))
    assert len(raw) <= media.MAX_UPLOAD_BYTES
    response = post(studio, "transcriptions", content=raw, headers={"Content-Type": MULTIPART})
    assert_openai_error(response, 413, "request_too_large")
    assert studio.fake.requests == []


def test_an_upload_just_under_the_cap_is_accepted(studio):
    # a WAV header claiming far more than the file holds: billed for what is there
    data = make_wav(0.5)
    data = data + b"\x00" * (media.MAX_AUDIO_FILE_BYTES - len(data))
    raw = _form(_field("model", "scribe"), _file(data))
    response = post(studio, "transcriptions", content=raw, headers={"Content-Type": MULTIPART})
    assert response.status_code == 200, response.text
    assert studio.fake.requests[-1]["body"]["file"]["size"] == len(data)
    assert only_row(studio).units == 0.5


def test_the_filename_and_type_go_upstream_only_as_safe_header_text(studio):
    raw = _form(
        _field("model", "scribe"),
        (
            'Content-Disposition: form-data; name="file"; filename="my \\"talk\\"\\\\\x01.wav"\r\n'
            "Content-Type: audio/wav; x=<script>",
            WAV,
        ),
    )
    response = post(studio, "transcriptions", content=raw, headers={"Content-Type": MULTIPART})
    assert response.status_code == 200, response.text
    sent = studio.fake.requests[-1]["body"]["file"]
    assert sent["filename"] == "my talk.wav"
    assert sent["content_type"] == "application/octet-stream"


def test_an_upstream_answering_html_fails_over_and_is_a_502_at_the_end(studio):
    studio.fake.behaviours["gpt-image-1"] = Behaviour(raw_response=("text/html", b"<h1>oops</h1>"))
    response = post(studio, "images", json={"model": "painter", "prompt": "x"})
    assert_openai_error(response, 502, "upstream_error")
    assert "<h1>" not in response.text
    row = only_row(studio)
    assert (row.status, row.http_status, row.cost) == ("error", 502, 0)


# ------------------------------------------------------------------ units, without a server
def test_wav_seconds_believes_only_the_bytes_that_were_sent():
    wav = make_wav(2.0)
    assert media.wav_seconds(wav) == 2.0
    assert media.wav_seconds(wav[: len(wav) // 2]) == pytest.approx(1.0, abs=0.01)
    assert media.wav_seconds(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert media.wav_seconds(b"ID3" + wav) is None


def _patch(wav: bytes, offset: int, fmt: str, value: int) -> bytes:
    """``wav`` with the header field at ``offset`` (a 44-byte PCM header) set to ``value``."""
    size = struct.calcsize(fmt)
    return wav[:offset] + struct.pack(fmt, value) + wav[offset + size :]


THREE_S = make_wav(3.0)  # 16 kHz mono 16-bit: 96,000 bytes of samples
# (header field, offset, format, value, the seconds it is billed): a header's lies either
# do not change the length (it comes from the samples sent) or make it unreadable, and
# then the file is billed by its size at 16 kbit/s; never nothing.
BY_SIZE = len(THREE_S) / 2000
WAV_LIES = [
    ("byte_rate huge", 28, "<I", 0xFFFFFFFF, 3.0),
    ("byte_rate zero", 28, "<I", 0, 3.0),
    ("byte_rate one", 28, "<I", 1, 3.0),
    ("sample_rate zero", 24, "<I", 0, BY_SIZE),
    ("sample_rate huge", 24, "<I", 0xFFFFFFFF, BY_SIZE),
    ("channels huge", 22, "<H", 0xFFFF, BY_SIZE),
    ("channels zero", 22, "<H", 0, BY_SIZE),
    ("block_align zero", 32, "<H", 0, BY_SIZE),
    ("block_align huge", 32, "<H", 0xFFFF, BY_SIZE),
    ("bits zero", 34, "<H", 0, BY_SIZE),
    ("bits odd", 34, "<H", 13, BY_SIZE),
    ("compressed format", 20, "<H", 2, BY_SIZE),  # MS ADPCM: its block is not channels x bits
    ("data size huge", 40, "<I", 0xFFFFFFFF, 3.0),  # only the bytes sent count
    ("data size zero", 40, "<I", 0, 3.0),  # a streamed WAV: read to the end
    ("data size small", 40, "<I", 32000, 1.0),
]


@pytest.mark.parametrize("what,offset,fmt,value,seconds", WAV_LIES, ids=[w[0] for w in WAV_LIES])
def test_a_wav_header_that_lies_is_billed_by_its_samples_or_its_size(
    what, offset, fmt, value, seconds
):
    assert media.upload_seconds(_patch(THREE_S, offset, fmt, value)) == pytest.approx(seconds)


NOT_WAV = {
    "executable": b"MZ\x90\x00" + b"\x00" * 5000,
    "mp3": b"\xff\xfb" + b"\x00" * 19998,
    "riff without wave": b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 1000,
    "wave with no format": b"RIFF\x00\x00\x00\x00WAVEdata\x10\x00\x00\x00" + b"\x00" * 16,
    "truncated format": THREE_S[:30],
    "header only": THREE_S[:44],
    "truncated samples": THREE_S[:45],
}


@pytest.mark.parametrize("data", NOT_WAV.values(), ids=NOT_WAV.keys())
def test_a_file_that_is_not_a_readable_wav_is_billed_by_its_size_never_zero(data):
    seconds = media.upload_seconds(data)
    assert seconds > 0
    if media.wav_seconds(data) is None or media.wav_seconds(data) == 0:
        assert seconds == len(data) / 2000


@pytest.mark.parametrize(
    "audio,seconds",
    [
        (_patch(THREE_S, 28, "<I", 0xFFFFFFFF), 3.0),
        (_patch(THREE_S, 28, "<I", 0), 3.0),
        (_patch(THREE_S, 22, "<H", 0xFFFF), BY_SIZE),
        (NOT_WAV["executable"], len(NOT_WAV["executable"]) / 2000),
    ],
    ids=["byte_rate huge", "byte_rate zero", "channels huge", "executable"],
)
def test_an_upload_the_provider_gives_no_length_for_is_billed_never_free(
    studio, mode, audio, seconds
):
    client(studio).audio.transcriptions.create(model="scribe", file=("a.wav", audio, "audio/wav"))
    row = only_row(studio)
    assert (row.units, row.unit) == (pytest.approx(seconds), "second")
    assert row.cost == money(seconds * WHISPER_PER_SECOND) and row.cost > 0


def test_catalog_unit_prices():
    from gateway.pricing import _image_price, unit_costs

    def dep(model, price=None):
        return SimpleNamespace(upstream_model=model, unit_price=price)

    assert unit_costs(dep("whisper-1")) == {"second": WHISPER_PER_SECOND}
    assert unit_costs(dep("tts-1")) == {"character": TTS_PER_CHARACTER}
    assert unit_costs(dep("rerank-english-v3.0")) == {"query": RERANK_PER_QUERY}
    image = unit_costs(dep("gpt-image-1"))
    assert image["image:high/1536x1024"] == 0.25 and image["image"] == 0.042
    assert unit_costs(dep("gpt-image-1", Decimal("0.5")))["image"] == 0.5
    assert unit_costs(dep("no-such-model")) == {}
    assert _image_price({"input_cost_per_pixel": 1e-08}, 1024 * 1024) == pytest.approx(0.01048576)


def test_a_refused_request_gives_its_reservation_back(studio):
    """A provider's 400 costs nothing: its reservation ($1 here, against a $0.35 cap) must
    not stay counted, or the next request would be refused."""
    from governance import services as gov

    services.deployment_save(
        actor=ACTOR,
        org=studio.org,
        model_name="scribe",
        provider=studio.providers["fake"],
        upstream_model="whisper-1",
        unit_price="0.1",
        deployment=studio.media["scribe"],
    )
    gov.policy_set(actor=ACTOR, org=studio.org, monthly_spend_cap_usd=Decimal("0.35"))
    refresh_snapshot()
    studio.fake.behaviours["whisper-1"] = Behaviour(status=400, fail_times=3, duration=1.0)
    upload = ("a.mp3", b"\xff\xfb" + b"\x00" * 19998, "audio/mpeg")
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            client(studio).audio.transcriptions.create(
                model="scribe", file=upload, response_format="verbose_json"
            )
    result = client(studio).audio.transcriptions.create(
        model="scribe", file=upload, response_format="verbose_json"
    )
    assert result.duration == 1.0
    rows = usage_rows(studio.org)
    assert [r.http_status for r in rows] == [400, 400, 400, 200]
    assert sum(r.cost for r in rows) == Decimal("0.1")


# ------------------------------------------------------------------ the unit price, set
def test_the_unit_price_is_set_through_the_api_exactly_and_audited(alice_client, org_a, charlie):
    from django.test import Client

    from gateway.models import Deployment
    from gateway.snapshot_builder import build_snapshot
    from orgs.models import AuditLog

    services.provider_save(actor=ACTOR, org=org_a, name="oai", kind="openai")
    base = {"model_name": "img", "provider": "oai", "upstream_model": "gpt-image-1"}
    for bad in (-1, "NaN", "0.000000001", "1e20"):
        response = alice_client.post(
            "/api/gateway/deployments", {**base, "unit_price": bad}, content_type="application/json"
        )
        assert response.status_code == 400 and list(response.json()) == ["unit_price"], bad
    assert not Deployment.objects.exists()
    created = alice_client.post(
        "/api/gateway/deployments", {**base, "unit_price": "0.04"}, content_type="application/json"
    )
    assert created.status_code == 201 and created.json()["unit_price"] == "0.04000000"
    dep = Deployment.objects.get()
    assert dep.unit_price == Decimal("0.04")
    audit = AuditLog.objects.filter(org=org_a, target_type="deployment").latest("id")
    assert audit.changes["after"]["unit_price"] == "0.04000000"
    [info] = build_snapshot().orgs[org_a.id].deployments["img"]
    assert info.unit_costs == {"image": 0.04, "second": 0.04, "character": 0.04, "query": 0.04}
    cleared = alice_client.patch(
        f"/api/gateway/deployments/{dep.id}", {"unit_price": None}, content_type="application/json"
    )
    assert cleared.json()["unit_price"] is None
    [info] = build_snapshot().orgs[org_a.id].deployments["img"]
    assert info.unit_costs["image:high/1536x1024"] == 0.25  # the catalog's again
    outsider = Client()
    outsider.force_login(charlie)
    assert outsider.get(f"/api/gateway/deployments/{dep.id}").status_code == 404


@pytest.mark.django_db
def test_the_unit_price_round_trips_through_the_config_file(tmp_path):
    from gateway.config import org_config_export
    from gateway.models import Deployment
    from gateway.tests.test_config_input import BASE, _apply, _deployment, _refused

    assert "unit_price" in _refused(tmp_path, BASE + _deployment(unit_price=-1))
    _apply(tmp_path, BASE + _deployment(unit_price=0.0001))
    dep = Deployment.objects.get()
    assert dep.unit_price == Decimal("0.0001")
    [exported] = org_config_export(dep.org)["orgs"][0]["deployments"]
    assert Decimal(str(exported["unit_price"])) == Decimal("0.0001")


def test_speech_cut_by_the_provider_is_recorded_as_an_error(studio):
    studio.fake.behaviours["tts-1"] = Behaviour(stream_chunks=10, reset_after_chunks=3)
    text = "cut short " * 10
    with httpx.stream(
        "POST",
        studio.base_url + "/audio/speech",
        headers={"Authorization": f"Bearer {studio.raw}"},
        json={"model": "voice", "voice": "alloy", "input": text},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        audio = b"".join(response.iter_bytes())
    assert 0 < len(audio) < 1024 * len(text)
    row = only_row(studio)
    assert (row.status, row.http_status, row.error_type) == ("error", 502, "stream_broken")
    assert row.cost == money(len(text) * TTS_PER_CHARACTER)


# ------------------------------------------------------------------ models with no price
UNPRICED = ["dall-e-2", "dall-e-3", "no-such-image-model"]  # not in the bundled map


def test_the_bundled_map_has_no_openai_dall_e_price_so_such_deployments_are_unpriced():
    from gateway.pricing import litellm_price_map, unpriced

    def dep(model, price=None, inp=None, out=None):
        return SimpleNamespace(
            upstream_model=model,
            unit_price=price,
            input_price_per_mtok=inp,
            output_price_per_mtok=out,
        )

    # What the docs say: OpenAI's dall-e models are only under a provider prefix there.
    assert not {"dall-e-2", "dall-e-3"} & set(litellm_price_map())
    assert "azure/standard/1024-x-1024/dall-e-3" in litellm_price_map()
    for model in UNPRICED:
        assert unpriced(dep(model), {}), model
        assert not unpriced(dep(model, Decimal("0.04")), {})
        assert not unpriced(dep(model, inp=Decimal("1")), {})
    for model in ("gpt-image-1", "whisper-1", "tts-1", "gpt-4o-mini", "rerank-english-v3.0"):
        assert not unpriced(dep(model), {}), model


@pytest.mark.parametrize("upstream", UNPRICED)
def test_an_unpriced_image_model_is_billed_0_with_one_warning_per_deployment(
    studio, mode, upstream, caplog
):
    media._warned_unpriced.clear()
    services.deployment_save(
        actor=ACTOR,
        org=studio.org,
        model_name="artist",
        provider=studio.providers["fake"],
        upstream_model=upstream,
    )
    refresh_snapshot()
    caplog.set_level("WARNING", logger="bonito.gateway.media")
    for _ in range(3):
        client(studio).images.generate(model="artist", prompt="a bonito fish")
    rows = usage_rows(studio.org)
    assert [(r.status, r.cost, r.units) for r in rows] == [("success", 0, 1)] * 3
    said = [r.getMessage() for r in caplog.records if "billed $0" in r.getMessage()]
    assert said == [
        f"fake/{upstream}: no price for images (neither the catalog nor the deployment's "
        "unit price): its requests are billed $0; set the deployment's unit price"
    ]


def test_a_priced_image_model_logs_no_price_warning(studio, caplog):
    media._warned_unpriced.clear()
    caplog.set_level("WARNING", logger="bonito.gateway.media")
    client(studio).images.generate(model="sketcher", prompt="x")
    client(studio).images.generate(model="painter", prompt="x")
    assert not [r for r in caplog.records if "billed $0" in r.getMessage()]
    assert all(r.cost > 0 for r in usage_rows(studio.org))


def test_the_dashboard_marks_an_unpriced_deployment_until_it_has_a_unit_price(alice_client, org_a):
    from django.urls import reverse

    provider = services.provider_save(
        actor=ACTOR, org=org_a, name="oai", kind="openai", credentials={"api_key": "sk-x"}
    )
    priced = services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="painter",
        provider=provider,
        upstream_model="gpt-image-1",
    )
    unpriced = services.deployment_save(
        actor=ACTOR, org=org_a, model_name="artist", provider=provider, upstream_model="dall-e-3"
    )
    mark = "no price: billed $0 — set a unit price"
    page = alice_client.get(reverse("providers", args=[org_a.slug])).content.decode()
    assert page.count(mark) == 1
    row = next(r for r in page.split("<tr>") if "dall-e-3" in r and "artist" in r)
    assert mark in row
    edit = reverse("deployment_edit", args=[org_a.slug, unpriced.pk])
    assert mark in alice_client.get(edit).content.decode()
    priced_edit = reverse("deployment_edit", args=[org_a.slug, priced.pk])
    assert mark not in alice_client.get(priced_edit).content.decode()
    body = {
        "model_name": "artist",
        "provider": str(provider.pk),
        "upstream_model": "dall-e-3",
        "region": "",
        "priority": "0",
        "weight": "1",
        "unit_price": "0.04",
        "is_active": "on",
    }
    response = alice_client.post(edit, body)
    assert response.status_code == 302, response.content[:500]
    unpriced.refresh_from_db()
    assert unpriced.unit_price == Decimal("0.04")
    assert mark not in alice_client.get(reverse("providers", args=[org_a.slug])).content.decode()
    assert mark not in alice_client.get(edit).content.decode()
