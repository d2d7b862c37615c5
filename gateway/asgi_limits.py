"""ASGI wrapper that caps /v1 request bodies before Django reads them whole."""


class BodyLimit:
    def __init__(self, app, max_bytes: int, prefix: str = "/v1/"):
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        # The view still authenticates the key and records the rejection; it gets no body.
        scope = {
            **scope,
            "bonito.body_too_large": True,
            "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"],
        }

        sent = False

        async def empty():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            while True:  # what is left of the body is discarded, never stored
                message = await receive()
                if message["type"] != "http.request":
                    return message

        return await self.app(scope, empty, send)
