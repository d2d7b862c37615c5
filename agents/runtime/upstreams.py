"""The agent's Upstreams: the data plane's, watched for the heartbeat's provider health and
for credentials that stopped working (a provider's 401 makes the agent read its sources again)."""

from gateway.dataplane.upstream import StreamBroken, UpstreamError, Upstreams

AUTH_FAILED = (401, 403)


def _short(exc: BaseException) -> str:
    """A class and status, never a message (it could quote a header or a key)."""
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}"


class Watched:
    """One adapter, its outcomes reported to the observer; calls go through unchanged.

    Every call the data plane makes on an adapter must be here (a test runs each endpoint
    through a real agent): one missing was an AttributeError, a 500 for every request of
    that endpoint in an agent while the shared gateway served it."""

    def __init__(self, adapter, observer):
        self.adapter, self.observer = adapter, observer

    async def _watch(self, dep, awaitable):
        try:
            result = await awaitable
        except UpstreamError as exc:
            self.observer(dep, exc)
            raise
        self.observer(dep, None)
        return result

    async def call(self, endpoint, dep, body, timeout, **kwargs):
        return await self._watch(dep, self.adapter.call(endpoint, dep, body, timeout, **kwargs))

    async def media(self, endpoint, dep, call, timeout):
        """Images, transcriptions, translations, moderations, rerank."""
        return await self._watch(dep, self.adapter.media(endpoint, dep, call, timeout))

    async def speech(self, dep, call, timeout):
        """(content type, the audio's chunks): a stream that breaks is reported too."""
        content_type, chunks = await self._watch(dep, self.adapter.speech(dep, call, timeout))
        return content_type, self._chunks(dep, chunks)

    async def _chunks(self, dep, inner):
        try:
            async for chunk in inner:
                yield chunk
        except (UpstreamError, StreamBroken) as exc:
            self.observer(dep, exc)
            raise
        finally:
            await _aclose(inner)

    def __getattr__(self, name):
        # Anything else an adapter offers (a later call of the data plane) goes through
        # unwatched rather than failing.
        return getattr(self.adapter, name)

    async def stream(self, endpoint, dep, body, timeout):
        inner = self.adapter.stream(endpoint, dep, body, timeout)
        started = False
        try:
            async for batch in inner:
                if not started:
                    started = True
                    self.observer(dep, None)
                yield batch
        except (UpstreamError, StreamBroken) as exc:
            self.observer(dep, exc)
            raise
        finally:
            await _aclose(inner)


class AgentUpstreams(Upstreams):
    def __init__(self, *args, stats, on_auth_failure, **kwargs):
        super().__init__(*args, **kwargs)
        self.stats = stats
        self.on_auth_failure = on_auth_failure

    def _observe(self, dep, exc) -> None:
        self.stats.provider_result(dep.provider, dep.kind, None if exc is None else _short(exc))
        if exc is not None and getattr(exc, "status", None) in AUTH_FAILED:
            self.on_auth_failure()

    def watched(self, adapter):
        return Watched(adapter, self._observe)

    def for_deployment(self, dep):
        return self.watched(super().for_deployment(dep))


async def _aclose(inner) -> None:
    """Closes an async iterator that can be closed (the upstream call behind it)."""
    aclose = getattr(inner, "aclose", None)
    if aclose is not None:
        await aclose()
