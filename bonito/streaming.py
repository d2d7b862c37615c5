"""Streamed responses served over ASGI read their sync iterators without a warning.

WhiteNoise answers static files with a FileResponse (a sync file iterator) and Django's
ASGI handler warned "StreamingHttpResponse must consume synchronous iterators" on every
one, then read it in a thread of its own. This middleware (outermost) gives such a
response an async iterator that reads each chunk in the request's thread instead, as
Django's own ASGIStaticFilesHandler does. Under WSGI nothing changes."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIRequest

_END = object()


class AsyncStreamingMiddleware:
    # Both: it adds no switch between the event loop and a thread to the chain.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        return _asyncify(request, self.get_response(request))

    async def _acall(self, request):
        return _asyncify(request, await self.get_response(request))


def _asyncify(request, response):
    if (
        isinstance(request, ASGIRequest)
        and getattr(response, "streaming", False)
        and not response.is_async
    ):
        response.streaming_content = _chunks(iter(response.streaming_content))
    return response


async def _chunks(iterator):
    take = sync_to_async(next, thread_sensitive=True)
    while (chunk := await take(iterator, _END)) is not _END:
        yield chunk
