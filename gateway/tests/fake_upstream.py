"""A fake OpenAI-compatible upstream, driven over real HTTP.

Behaviour per upstream model name: latency, an injected status (429/500/…), a number of
failures before succeeding, a hang (timeout), a stream that resets mid-way, and whether
usage is reported. Run it alone with `python -m gateway.tests.fake_upstream --port 18081`,
in a thread of the tests with `start()`, or in memory with `serve_in_memory()`.
"""

import argparse
import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

# What deployments call a fake served by serve_in_memory (a host that is never resolved).
IN_MEMORY_URL = "http://fake-upstream.invalid/v1"


@dataclass
class Behaviour:
    status: int = 200
    fail_times: int | None = None  # fail this many times with ``status``, then succeed
    latency: float = 0.0
    hang: bool = False  # never answer (the gateway's timeout fires)
    retry_after: str | None = None
    error_message: str = "injected failure"
    error_code: str | None = None
    stream_chunks: int = 5
    chunk_delay: float = 0.0
    reset_after_chunks: int | None = None  # drop the connection mid-stream
    report_usage: bool = True
    redirect_to: str | None = (
        None  # answer 307 to this URL (plus ?redirected=1, not redirected again)
    )
    json_when_streaming: bool = False  # answer a JSON completion even to stream: true
    raw_response: tuple[str, bytes] | None = None  # answer 200 with (content type, body)
    # raw_response written in pieces cut at these offsets, each flushed after a pause (a
    # stream whose events arrive split across reads, or several in one read)
    raw_cuts: list[int] | None = None
    cached_tokens: int | None = None  # report usage.prompt_tokens_details.cached_tokens
    usage_on_last_chunk: bool = False  # streams: usage on the finish chunk, not its own
    duration: float | None = None  # transcripts: the verbose_json duration (None: the WAV's)


def _first_tool_name(tools) -> str:
    first = tools[0] if isinstance(tools, list) and tools else None
    function = first.get("function") if isinstance(first, dict) else None
    return function.get("name", "tool") if isinstance(function, dict) else "tool"


class FakeUpstream:
    def __init__(self):
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: list[dict] = []
        self.hooks: list[dict] = []  # what webhooks (budget alerts) posted to /hooks
        self.hook_fail_times = 0  # answer this many webhook posts with 500 first
        self.hook_attempts = 0
        self.url = ""
        self._loop = None
        self._runner = None
        self.cancelled_streams = 0

    def reset(self):
        self.behaviours.clear()
        self.requests.clear()
        self.hooks.clear()
        self.hook_fail_times = self.hook_attempts = 0
        self.cancelled_streams = 0

    def behaviour(self, model) -> Behaviour:
        return self.behaviours.get(model, Behaviour())

    # ---------------------------------------------------------------- HTTP handlers
    async def _handle(self, request: web.Request, endpoint: str):
        body = await request.json()
        self.requests.append(
            {
                "endpoint": endpoint,
                "body": body,
                "headers": dict(request.headers),
                "query": request.query_string,
            }
        )
        model = body.get("model", "")
        b = self.behaviour(model)
        if b.hang:
            await asyncio.sleep(3600)
        if b.latency:
            await asyncio.sleep(b.latency)
        if b.redirect_to and "redirected" not in request.query:
            return web.Response(status=307, headers={"Location": b.redirect_to + "?redirected=1"})
        failing = b.status != 200 and (b.fail_times is None or b.fail_times > 0)
        if failing:
            if b.fail_times is not None:
                b.fail_times -= 1
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return web.json_response(
                {
                    "error": {
                        "message": b.error_message,
                        "type": "invalid_request_error" if b.status < 500 else "server_error",
                        "param": None,
                        "code": b.error_code,
                    }
                },
                status=b.status,
                headers=headers,
            )
        if b.raw_response is not None and b.raw_cuts is not None:
            resp = web.StreamResponse(headers={"Content-Type": b.raw_response[0]})
            await resp.prepare(request)
            body, cuts = b.raw_response[1], [0, *sorted(b.raw_cuts), len(b.raw_response[1])]
            for start, end in zip(cuts, cuts[1:], strict=False):
                if end > start:
                    await resp.write(body[start:end])
                    await asyncio.sleep(0.003)
            return resp
        if b.raw_response is not None:
            return web.Response(status=200, content_type=b.raw_response[0], body=b.raw_response[1])
        if endpoint == "embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return web.json_response(
                {
                    "object": "list",
                    "model": model,
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                        for i, _ in enumerate(inputs)
                    ],
                    "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
                }
            )
        words = [f"word{i}" for i in range(b.stream_chunks)]
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": len(words),
            "total_tokens": 11 + len(words),
        }
        if b.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": b.cached_tokens}
        if body.get("stream") and not b.json_when_streaming:
            return await self._stream(request, endpoint, body, b, words, usage)
        payload = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if endpoint == "chat":
            message = {"role": "assistant", "content": " ".join(words)}
            if body.get("tools"):
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": _first_tool_name(body["tools"]),
                                "arguments": '{"city": "Paris"}',
                            },
                        }
                    ],
                }
            payload.update(
                object="chat.completion",
                choices=[{"index": 0, "message": message, "finish_reason": "stop"}],
            )
        else:
            payload.update(
                object="text_completion",
                choices=[
                    {"index": 0, "text": " ".join(words), "finish_reason": "stop", "logprobs": None}
                ],
            )
        if b.report_usage:
            payload["usage"] = usage
        return web.json_response(payload)

    async def _stream(self, request, endpoint, body, b: Behaviour, words, usage):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        try:
            for i, word in enumerate(words):
                if b.reset_after_chunks is not None and i >= b.reset_after_chunks:
                    request.transport.close()  # a mid-stream connection reset
                    return resp
                piece = word if i == 0 else " " + word
                choice = (
                    {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                    if endpoint == "chat"
                    else {"index": 0, "text": piece, "finish_reason": None}
                )
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": obj,
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                }
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
            done = (
                {"index": 0, "delta": {}, "finish_reason": "stop"}
                if endpoint == "chat"
                else {"index": 0, "text": "", "finish_reason": "stop"}
            )
            wants_usage = b.report_usage and (body.get("stream_options") or {}).get("include_usage")
            finish = {
                "id": "chatcmpl-fake",
                "object": obj,
                "created": 0,
                "model": body["model"],
                "choices": [done],
            }
            if wants_usage and b.usage_on_last_chunk:
                finish["usage"] = usage
            await resp.write(f"data: {json.dumps(finish)}\n\n".encode())
            if wants_usage and not b.usage_on_last_chunk:
                last = {
                    "id": "chatcmpl-fake",
                    "object": obj,
                    "created": 0,
                    "model": body["model"],
                    "choices": [],
                    "usage": usage,
                }
                await resp.write(f"data: {json.dumps(last)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled_streams += 1
            raise
        return resp

    # ---------------------------------------------------------------- media endpoints
    async def _media(self, request: web.Request, endpoint: str):
        """Images, audio, moderations and rerank, as OpenAI (and Cohere/Jina for rerank)
        answer them; the same injected behaviours as chat, by upstream model name."""
        upload = None
        if endpoint in ("transcriptions", "translations"):
            form = await request.post()
            body = {k: v for k, v in form.items() if not isinstance(v, web.FileField)}
            body["timestamp_granularities[]"] = form.getall("timestamp_granularities[]", [])
            file = form.get("file")
            if isinstance(file, web.FileField):
                data = file.file.read()
                upload = {
                    "filename": file.filename,
                    "content_type": file.content_type,
                    "size": len(data),
                }
                body["file"] = upload
                upload["data"] = data
        else:
            body = await request.json()
        self.requests.append(
            {
                "endpoint": endpoint,
                "body": body,
                "headers": dict(request.headers),
                "query": request.query_string,
                "content_type": request.content_type,
            }
        )
        model = body.get("model", "")
        b = self.behaviour(model)
        if b.hang:
            await asyncio.sleep(3600)
        if b.latency:
            await asyncio.sleep(b.latency)
        if b.status != 200 and (b.fail_times is None or b.fail_times > 0):
            if b.fail_times is not None:
                b.fail_times -= 1
            return web.json_response(
                {
                    "error": {
                        "message": b.error_message,
                        "type": "invalid_request_error" if b.status < 500 else "server_error",
                        "param": None,
                        "code": b.error_code,
                    }
                },
                status=b.status,
            )
        if b.raw_response is not None:
            return web.Response(status=200, content_type=b.raw_response[0], body=b.raw_response[1])
        if endpoint == "images":
            n = body.get("n") or 1
            fmt = body.get("response_format") or "url"
            item = (
                {"b64_json": "iVBORw0KGgo="}
                if fmt == "b64_json"
                else {"url": "https://img.invalid/1.png"}
            )
            payload = {"created": int(time.time()), "data": [dict(item) for _ in range(n)]}
            if b.report_usage and model.startswith("gpt-image"):
                payload["usage"] = {"input_tokens": 9, "output_tokens": 4160, "total_tokens": 4169}
            return web.json_response(payload)
        if endpoint in ("transcriptions", "translations"):
            return self._transcript(body, upload, b)
        if endpoint == "speech":
            return await self._speech(request, body, b)
        if endpoint == "moderations":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            results = [
                {
                    "flagged": "kill" in str(i),
                    "categories": {"violence": "kill" in str(i)},
                    "category_scores": {"violence": 0.9 if "kill" in str(i) else 0.01},
                }
                for i in inputs
            ]
            return web.json_response({"id": "modr-fake", "model": model, "results": results})
        # rerank: documents scored by the words they share with the query
        query = set(body["query"].lower().split())
        docs = [d if isinstance(d, str) else d.get("text", "") for d in body["documents"]]
        scored = sorted(
            (
                (len(query & set(d.lower().split())) / (len(query) or 1), i)
                for i, d in enumerate(docs)
            ),
            key=lambda pair: (-pair[0], pair[1]),
        )[: body.get("top_n") or len(docs)]
        results = []
        for score, i in scored:
            result = {"index": i, "relevance_score": score}
            if body.get("return_documents"):
                result["document"] = {"text": docs[i]}
            results.append(result)
        usage = {"total_tokens": 7 * (len(docs) + 1)}
        return web.json_response(
            {"id": "rerank-fake", "model": model, "results": results, "usage": usage}
        )

    @staticmethod
    def _transcript(body, upload, b: Behaviour):
        text = f"transcript of {upload['filename'] if upload else 'nothing'}"
        fmt = body.get("response_format") or "json"
        seconds = _wav_seconds(upload["data"]) if upload else None
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt == "srt":
            return web.Response(
                text=f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n", content_type="text/plain"
            )
        if fmt == "vtt":
            return web.Response(
                text=f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n", content_type="text/vtt"
            )
        payload = {"text": text}
        if fmt == "verbose_json":
            payload.update(
                task="transcribe",
                language=body.get("language") or "english",
                duration=b.duration if b.duration is not None else seconds,
                segments=[],
            )
        return web.json_response(payload)

    async def _speech(self, request, body, b: Behaviour):
        fmt = body.get("response_format") or "mp3"
        content_type = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg"}.get(
            fmt, "application/octet-stream"
        )
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        # 1 KB of audio per character of input, in stream_chunks pieces
        audio = (b"ID3" + bytes(range(256)) * 4 * len(body["input"]))[: 1024 * len(body["input"])]
        step = max(1, len(audio) // max(1, b.stream_chunks))
        try:
            for i, start in enumerate(range(0, len(audio), step)):
                if b.reset_after_chunks is not None and i >= b.reset_after_chunks:
                    request.transport.close()
                    return resp
                await resp.write(audio[start : start + step])
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled_streams += 1
            raise
        return resp

    async def _hook(self, request: web.Request):
        self.hook_attempts += 1
        if self.hook_fail_times > 0:
            self.hook_fail_times -= 1
            return web.Response(status=500, text="injected failure")
        self.hooks.append(await request.json())
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", lambda r: self._handle(r, "chat"))
        app.router.add_post("/v1/completions", lambda r: self._handle(r, "completions"))
        app.router.add_post("/v1/embeddings", lambda r: self._handle(r, "embeddings"))
        for endpoint, path in (
            ("images", "/v1/images/generations"),
            ("transcriptions", "/v1/audio/transcriptions"),
            ("translations", "/v1/audio/translations"),
            ("speech", "/v1/audio/speech"),
            ("moderations", "/v1/moderations"),
            ("rerank", "/v1/rerank"),
        ):
            app.router.add_post(path, lambda r, e=endpoint: self._media(r, e))
        app.router.add_post("/hooks", self._hook)
        return app

    # ---------------------------------------------------------------- lifecycle
    async def serve_in_memory(self):
        """Serve this fake in the running event loop with no port: returns the connector
        factory to give ``Upstreams(connector=...)``, whose connections reach only this fake
        (deployments name it by ``IN_MEMORY_URL``)."""
        # A hung handler is not waited for at the end of a test.
        self._runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        self.url = IN_MEMORY_URL
        server = self._runner.server
        return lambda: MemoryConnector(server)

    async def stop_in_memory(self) -> None:
        await self._runner.cleanup()

    def start(self, port: int = 0) -> "FakeUpstream":
        started = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(self.app(), handle_signals=False)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", port)
            self._loop.run_until_complete(site.start())
            sock_port = site._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{sock_port}/v1"
            started.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="fake-upstream", daemon=True).start()
        started.wait(10)
        return self


def _wav_seconds(data: bytes) -> float | None:
    import io
    import wave

    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, RuntimeError, ValueError, ZeroDivisionError):
        return None


class MemoryConnector(aiohttp.BaseConnector):
    """aiohttp connections to an aiohttp server in the same event loop over a socket pair:
    client and server speak real HTTP/1.1 (status lines, chunked SSE, a reset is a closed
    socket), with no listening socket, no DNS and no thread."""

    def __init__(self, server: web.Server):
        super().__init__()
        self._server = server

    async def _create_connection(self, req, traces, timeout):
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        await loop.connect_accepted_socket(self._server, theirs)
        _, protocol = await loop.create_connection(self._factory, sock=ours)
        return protocol


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=18081)
    args = parser.parse_args()
    fake = FakeUpstream().start(args.port)
    print(f"fake upstream on {fake.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
