"""A cap on request bodies in front of Django.

Django's ASGI handler reads a request's whole body (into a temporary file past
FILE_UPLOAD_MAX_MEMORY_SIZE) before any middleware, view or sign-in check runs; its own
DATA_UPLOAD_MAX_MEMORY_SIZE is checked only when a view reads the body. So anyone could make
the server read and write to disk hundreds of megabytes per request, to be answered 401 or
403 afterwards. Here a body declared larger than the cap is answered 413 before a byte of it
is read, and a body streamed without a length (chunked) is cut off when it passes the cap,
or as soon as its chunk sizes announce more than the cap (the HTTP protocol `make serve`
runs puts their sum in the scope: a chunk size of a terabyte is refused at once, not read).
"""

import orjson

# gateway.dataplane.http_protocol.BODY_ANNOUNCED (not imported: bonito must not need it)
BODY_ANNOUNCED = "bonito.body_announced"
TOO_LARGE = "The request body is larger than the server accepts ({} bytes at most)."


class BodyCap:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.strip().isdigit() and int(value) > self.max_bytes:
                    return await self._too_large(scope, send)
                break
        state = {"read": 0, "over": False, "started": False}

        async def capped_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.max_bytes or scope.get(BODY_ANNOUNCED, 0) > self.max_bytes:
                    # Django's handler takes a disconnect while reading the body as the end
                    # of the request and answers nothing; the 413 is sent below.
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, capped_receive, tracked_send)
        if state["over"] and not state["started"]:
            await self._too_large(scope, send)

    async def _too_large(self, scope, send):
        message = TOO_LARGE.format(self.max_bytes)
        if scope["path"].startswith("/api/"):
            body, kind = orjson.dumps({"detail": message}), b"application/json"
        else:
            body, kind = message.encode(), b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", kind),
                    (b"content-length", str(len(body)).encode()),
                    # the rest of the body is not read: the connection cannot carry another
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
