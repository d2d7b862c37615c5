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
    "quality,size,n", [("medium", "1024x1024", 1), ("high", "1536x1024", 2), ("low", "1024x1536", 3)]
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
def test_plain_text_transcripts_are_relayed_as_text(studio, fmt, expected):
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
