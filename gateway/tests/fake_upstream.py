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
    prompt_tokens: int = 11  # the prompt's size the usage reports (cache reads/writes apart)
    cached_tokens: int | None = None  # report usage.prompt_tokens_details.cached_tokens
    # report "service_tier" on chat completions (every chunk) and responses: this value, or
    # "echo": the request's flex or priority as OpenAI serves them, else "default"
    service_tier: str | None = None
    # Anthropic: report usage.cache_creation_input_tokens (prompt tokens written to its cache)
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int = 0  # of those, written for an hour (usage.cache_creation)
    # usage.server_tool_use.web_search_requests (Anthropic's web search tool; on chat
    # completions as LiteLLM reports it)
    web_searches: int | None = None
    # OpenAI's web search: chat answers cite the web (url_citation annotations on the
    # message, or on a stream's last content delta); a Responses output holds this many
    # web_search_call items after its message
    cite_web: bool = False
    web_search_calls: int = 0
    # chat completions: (prompt, output) audio tokens within the usage's counts, as OpenAI
    # reports them (prompt_tokens_details / completion_tokens_details.audio_tokens)
    audio_tokens: tuple[int, int] | None = None
    usage_on_last_chunk: bool = False  # streams: usage on the finish chunk, not its own
    duration: float | None = None  # transcripts: the verbose_json duration (None: the WAV's)


# OpenAI's moderation categories (every result carries each of them).
MODERATION = (
    "hate",
    "hate/threatening",
    "harassment",
    "harassment/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


# A web page an OpenAI search model's answer cites.
CITATION = {
    "type": "url_citation",
    "url_citation": {"start_index": 0, "end_index": 5, "url": "https://example.com/", "title": "E"},
}


def _web_search_calls(n: int) -> list[dict]:
    return [
        {
            "type": "web_search_call",
            "id": f"ws_fake{i}",
            "status": "completed",
            "action": {"type": "search", "query": f"query {i}"},
        }
        for i in range(n)
    ]


def _first_tool_name(tools) -> str:
    first = tools[0] if isinstance(tools, list) and tools else None
    function = first.get("function") if isinstance(first, dict) else None
    return function.get("name", "tool") if isinstance(function, dict) else "tool"


def _tier(b: Behaviour, body: dict) -> str | None:
    if b.service_tier != "echo":
        return b.service_tier
    asked = body.get("service_tier")
    return asked if asked in ("flex", "priority") else "default"


def _sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


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
        self.responses: dict[tuple[str, str], dict] = {}  # (credential, id) -> kept response
        self.response_count = 0

    def reset(self):
        self.responses.clear()
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
        if endpoint == "responses":
            return await self._responses(request, body, b)
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
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": b.prompt_tokens + len(words),
        }
        if b.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": b.cached_tokens}
        if b.web_searches is not None:
            usage["server_tool_use"] = {"web_search_requests": b.web_searches}
        if b.audio_tokens is not None:
            details = usage.setdefault("prompt_tokens_details", {})
            details["audio_tokens"] = b.audio_tokens[0]
            usage["completion_tokens_details"] = {"audio_tokens": b.audio_tokens[1]}
        if body.get("stream") and not b.json_when_streaming:
            return await self._stream(request, endpoint, body, b, words, usage)
        payload = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if endpoint == "chat":
            # As OpenAI sends them: refusal and logprobs are there, null (its spec requires them).
            message = {"role": "assistant", "content": " ".join(words), "refusal": None}
            if b.cite_web:
                message["annotations"] = [CITATION]
            last = (body.get("messages") or [{}])[-1]
            if body.get("tools") and last.get("role") != "tool":  # answered once a tool has
                message = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
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
                choices=[
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if body.get("tools") else "stop",
                        "logprobs": None,
                    }
                ],
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
        if _tier(b, body) is not None:
            payload["service_tier"] = _tier(b, body)
        return web.json_response(payload)

    async def _stream(self, request, endpoint, body, b: Behaviour, words, usage):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        last = (body.get("messages") or [{}])[-1]
        if endpoint == "chat" and body.get("tools") and last.get("role") != "tool":
            # A tool call in pieces: its id and name first, then its arguments in two.
            name = _first_tool_name(body["tools"])
            pieces = [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}},
                {"function": {"arguments": '{"city": '}},
                {"function": {"arguments": '"Paris"}'}},
            ]
            words = [{"tool_calls": [{"index": 0, **piece}]} for piece in pieces]
        try:
            for i, word in enumerate(words):
                if b.reset_after_chunks is not None and i >= b.reset_after_chunks:
                    request.transport.close()  # a mid-stream connection reset
                    return resp
                piece = word if i == 0 or isinstance(word, dict) else " " + word
                delta = piece if isinstance(piece, dict) else {"content": piece}
                if b.cite_web and i == len(words) - 1:
                    delta = {**delta, "annotations": [CITATION]}
                choice = (
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": None,
                    }
                    if endpoint == "chat"
                    else {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}
                )
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": obj,
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                }
                if _tier(b, body) is not None:
                    chunk["service_tier"] = _tier(b, body)
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
            done = (
                {"index": 0, "delta": {}, "finish_reason": "stop"}
                if endpoint == "chat"
                else {"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}
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
            if _tier(b, body) is not None:
                finish["service_tier"] = _tier(b, body)
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
                if _tier(b, body) is not None:
                    last["service_tier"] = _tier(b, body)
                await resp.write(f"data: {json.dumps(last)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled_streams += 1
            raise
        return resp

    # ---------------------------------------------------------------- Anthropic's API
    async def _anthropic(self, request: web.Request, endpoint: str):
        """/v1/messages (and its count_tokens) in Anthropic's shape: its errors, its
        message, its event stream (`event:` lines, usage in message_start/message_delta)."""
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
        if b.status != 200 and (b.fail_times is None or b.fail_times > 0):
            if b.fail_times is not None:
                b.fail_times -= 1
            kinds = {
                400: "invalid_request_error",
                401: "authentication_error",
                404: "not_found_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }
            error = {"type": kinds.get(b.status, "api_error"), "message": b.error_message}
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return web.json_response(
                {"type": "error", "error": error}, status=b.status, headers=headers
            )
        if endpoint == "count_tokens":
            return web.json_response({"input_tokens": 13})
        if b.raw_response is not None:
            return web.Response(status=200, content_type=b.raw_response[0], body=b.raw_response[1])
        words = [f"word{i}" for i in range(b.stream_chunks)]
        tools = body.get("tools")
        tool_name = tools[0].get("name", "tool") if isinstance(tools, list) and tools else None
        usage = {"input_tokens": b.prompt_tokens, "output_tokens": len(words)}
        if b.cached_tokens is not None:
            usage["cache_read_input_tokens"] = b.cached_tokens
        if b.web_searches is not None:
            usage["server_tool_use"] = {"web_search_requests": b.web_searches}
        if b.cache_write_tokens is not None:
            usage["cache_creation_input_tokens"] = b.cache_write_tokens
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": b.cache_write_tokens - b.cache_write_1h_tokens,
                "ephemeral_1h_input_tokens": b.cache_write_1h_tokens,
            }
        if body.get("stream"):
            return await self._anthropic_stream(request, body, b, words, usage, tool_name)
        if tool_name:
            content = [
                {"type": "tool_use", "id": "toolu_1", "name": tool_name, "input": {"city": "Paris"}}
            ]
        else:
            content = [{"type": "text", "text": " ".join(words)}]
        payload = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if tool_name else "end_turn",
            "stop_sequence": None,
        }
        if b.report_usage:
            payload["usage"] = usage
        return web.json_response(payload)

    async def _anthropic_stream(self, request, body, b: Behaviour, words, usage, tool_name):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(data):
            await resp.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())

        start_usage = {
            "input_tokens": usage["input_tokens"] if b.report_usage else 0,
            "output_tokens": 1 if b.report_usage else 0,
        }
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        try:
            await send({"type": "message_start", "message": message})
            await send({"type": "ping"})
            if tool_name:
                block = {"type": "tool_use", "id": "toolu_1", "name": tool_name, "input": {}}
                pieces = ['{"city": ', '"Paris"}']
                delta = "input_json_delta", "partial_json"
            else:
                block = {"type": "text", "text": ""}
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                delta = "text_delta", "text"
            await send({"type": "content_block_start", "index": 0, "content_block": block})
            for i, piece in enumerate(pieces):
                if b.reset_after_chunks is not None and i >= b.reset_after_chunks:
                    request.transport.close()  # a mid-stream connection reset
                    return resp
                await send(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": delta[0], delta[1]: piece},
                    }
                )
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
            await send({"type": "content_block_stop", "index": 0})
            end_usage = {"output_tokens": usage["output_tokens"] if b.report_usage else 0}
            for field in (
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "cache_creation",
                "server_tool_use",
            ):
                if b.report_usage and field in usage:
                    end_usage[field] = usage[field]
            await send(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": "tool_use" if tool_name else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": end_usage,
                }
            )
            await send({"type": "message_stop"})
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled_streams += 1
            raise
        return resp

    # ---------------------------------------------------------------- the Responses API
    # Responses are kept per credential (the Authorization header), as OpenAI keeps them
    # per account: another credential's id is not found.
    def _kept(self, request, rid):
        return self.responses.get((request.headers.get("Authorization", ""), rid))

    @staticmethod
    def _not_found(rid, param=None):
        return web.json_response(
            {
                "error": {
                    "message": f"No response found with id '{rid}'.",
                    "type": "invalid_request_error",
                    "param": param,
                    "code": "previous_response_not_found" if param else None,
                }
            },
            status=400 if param else 404,
        )

    async def _responses(self, request, body, b: Behaviour):
        """POST /v1/responses: a function call when tools are offered and the last input
        item is not a call's output, else words; kept (unless store is false) for GET,
        DELETE, input_items and previous_response_id."""
        auth = request.headers.get("Authorization", "")
        prev = body.get("previous_response_id")
        history = []
        if prev is not None:
            kept = self._kept(request, prev)
            if kept is None:
                return self._not_found(prev, "previous_response_id")
            history = kept["items"] + kept["response"]["output"]
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else list(items)
        self.response_count += 1
        rid = f"resp_fake{self.response_count}"
        words = [f"word{i}" for i in range(b.stream_chunks)]
        if prev is not None:
            words.append(f"turn{len([i for i in history if i.get('role') == 'user']) + 1}")
        last = items[-1] if items else {}
        functions = [t for t in body.get("tools") or () if t.get("type") == "function"]
        if functions and last.get("type") != "function_call_output":
            tool = functions[0]
            item = {
                "type": "function_call",
                "id": f"fc_fake{self.response_count}",
                "call_id": f"call_fake{self.response_count}",
                "name": tool.get("name", "tool"),
                "arguments": '{"city": "Paris"}',
                "status": "completed",
            }
        else:
            text = " ".join(words)
            item = {
                "type": "message",
                "id": f"msg_fake{self.response_count}",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        response = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body["model"],
            "output": [item, *_web_search_calls(b.web_search_calls)],
            "previous_response_id": prev,
            "instructions": body.get("instructions"),
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": True,
            "store": body.get("store", True),
            # The fields OpenAI's spec requires on every response object.
            "error": None,
            "incomplete_details": None,
            "metadata": body.get("metadata") or {},
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "usage": {
                "input_tokens": b.prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": b.cached_tokens or 0,
                    "cache_write_tokens": 0,
                },
                "output_tokens": len(words),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": b.prompt_tokens + len(words),
            }
            if b.report_usage
            else None,
        }
        if _tier(b, body) is not None:
            response["service_tier"] = _tier(b, body)
        if body.get("background"):
            # As OpenAI answers a background request: queued, no output, no usage yet (the
            # generation is billed later, when it runs).
            response = {**response, "status": "queued", "output": [], "usage": None}
        if body.get("store", True):
            self.responses[(auth, rid)] = {"items": history + items, "response": response}
        if not body.get("stream"):
            return web.json_response(response)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        seq = iter(range(10_000))

        async def send(kind, **fields):
            await resp.write(_sse({"type": kind, "sequence_number": next(seq), **fields}))

        start = {**response, "status": "in_progress", "output": [], "usage": None}
        try:
            await send("response.created", response=start)
            await send("response.in_progress", response=start)
            for call in _web_search_calls(b.web_search_calls):  # each searched, streamed first
                await send("response.output_item.added", output_index=0, item=call)
                await send("response.output_item.done", output_index=0, item=call)
            opened = {**item, "status": "in_progress"}
            if item["type"] == "message":
                opened["content"] = []
            else:
                opened["arguments"] = ""
            await send("response.output_item.added", output_index=0, item=opened)
            if item["type"] == "message":
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                await send(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=0,
                    content_index=0,
                    part=part,
                )
                for i, word in enumerate(words):
                    if b.reset_after_chunks is not None and i >= b.reset_after_chunks:
                        request.transport.close()  # a mid-stream connection reset
                        return resp
                    await send(
                        "response.output_text.delta",
                        item_id=item["id"],
                        output_index=0,
                        content_index=0,
                        delta=word if i == 0 else " " + word,
                    )
                    if b.chunk_delay:
                        await asyncio.sleep(b.chunk_delay)
                text = item["content"][0]["text"]
                await send(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=0,
                    content_index=0,
                    text=text,
                )
                await send(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=0,
                    content_index=0,
                    part=item["content"][0],
                )
            else:
                await send(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=0,
                    delta=item["arguments"],
                )
                await send(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=0,
                    arguments=item["arguments"],
                )
            await send("response.output_item.done", output_index=0, item=item)
            await send("response.completed", response=response)
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled_streams += 1
            raise
        return resp

    async def _response_get(self, request):
        rid = request.match_info["rid"]
        self.requests.append({"endpoint": "responses.get", "id": rid, "method": request.method})
        kept = self._kept(request, rid)
        if kept is None:
            return self._not_found(rid)
        if request.method == "DELETE":
            del self.responses[(request.headers.get("Authorization", ""), rid)]
            return web.json_response({"id": rid, "object": "response", "deleted": True})
        return web.json_response(kept["response"])

    async def _response_items(self, request):
        rid = request.match_info["rid"]
        self.requests.append(
            {"endpoint": "responses.input_items", "id": rid, "query": request.query_string}
        )
        kept = self._kept(request, rid)
        if kept is None:
            return self._not_found(rid)
        data = []
        for i, item in enumerate(kept["items"]):
            if "role" not in item:
                data.append({"id": f"item_in{i}", **item})
                continue
            content = item["content"]
            if isinstance(content, str):  # OpenAI lists text as a part
                kind = "output_text" if item["role"] == "assistant" else "input_text"
                content = [{"type": kind, "text": content}]
            data.append(
                {"id": f"msg_in{i}", "type": "message", "status": "completed", **item}
                | {"content": content}
            )
        if request.query.get("order") == "desc" or "order" not in request.query:
            data.reverse()  # OpenAI lists newest first by default
        limit = int(request.query.get("limit", 20))
        return web.json_response(
            {
                "object": "list",
                "data": data[:limit],
                "first_id": data[0]["id"] if data else None,
                "last_id": data[:limit][-1]["id"] if data else None,
                "has_more": len(data) > limit,
            }
        )

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
                payload["usage"] = {
                    "input_tokens": 9,
                    "input_tokens_details": {"text_tokens": 9, "image_tokens": 0},
                    "output_tokens": 4160,
                    "total_tokens": 4169,
                }
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
                    "categories": {c: c == "violence" and "kill" in str(i) for c in MODERATION},
                    "category_scores": {
                        c: 0.9 if c == "violence" and "kill" in str(i) else 0.01 for c in MODERATION
                    },
                    "category_applied_input_types": {c: ["text"] for c in MODERATION},
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
        app.router.add_post("/v1/messages", lambda r: self._anthropic(r, "messages"))
        app.router.add_post(
            "/v1/messages/count_tokens", lambda r: self._anthropic(r, "count_tokens")
        )
        app.router.add_post("/v1/responses", lambda r: self._handle(r, "responses"))
        app.router.add_get("/v1/responses/{rid}", self._response_get)
        app.router.add_delete("/v1/responses/{rid}", self._response_get)
        app.router.add_get("/v1/responses/{rid}/input_items", self._response_items)
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
