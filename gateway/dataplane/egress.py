"""HTTP clients that connect only where the network policy allows: the address is checked
by the resolver of each connection and the connection goes to that checked address (no
second lookup an attacker's DNS could answer differently). Redirects are not followed."""

import asyncio
import contextvars
import functools
import socket
import ssl
import weakref

import httpcore
import httpx
from aiohttp.abc import AbstractResolver

from .netpolicy import NetworkPolicy

# The policy of the call in progress, for the one shared LiteLLM client (LiteLLM takes a
# process-wide HTTP client, not one per call). Unset: every connection is refused.
current_policy: contextvars.ContextVar[NetworkPolicy | None] = contextvars.ContextVar(
    "bonito_network_policy", default=None
)


def _policy(policy: NetworkPolicy | None) -> NetworkPolicy:
    policy = policy or current_policy.get()
    if policy is None:
        raise httpcore.ConnectError("no network policy for this call")
    return policy


class GuardedResolver(AbstractResolver):
    """aiohttp resolver: only allowed addresses come back (aiohttp skips resolvers for IP
    literals, so callers check those with ``NetworkPolicy.check_literal``)."""

    def __init__(self, get_policy):
        self.get_policy = get_policy

    async def resolve(self, host, port=0, family=socket.AF_INET):
        addresses = await asyncio.to_thread(self.get_policy().resolve, host, port)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self):
        return None


class _Backend(httpcore.NetworkBackend):
    def __init__(self, policy: NetworkPolicy | None = None):
        self.policy, self.inner = policy, httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = _policy(self.policy).resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    def connect_unix_socket(self, *args, **kwargs):
        raise httpcore.ConnectError("unix sockets are not allowed")

    def sleep(self, seconds):
        self.inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: NetworkPolicy | None = None):
        self.policy, self.inner = policy, httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = await asyncio.to_thread(_policy(self.policy).resolve, host, port)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, *args, **kwargs):
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's verifying TLS context, shared by every outbound client: building one
    reads the whole CA bundle (~25 ms of CPU), which each new client (an alert delivery, a
    worker's event loop) used to pay twice. A context is safe to share between threads."""
    return httpx.create_ssl_context()


def guarded_client(policy: NetworkPolicy, **kwargs) -> httpx.Client:
    """A synchronous httpx client bound to ``policy`` (no environment proxies, no redirects)."""
    transport = httpx.HTTPTransport(verify=tls_context())
    # httpx takes no network backend; its pool (the documented httpcore one) does.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=tls_context(), network_backend=_Backend(policy)
    )
    return httpx.Client(transport=transport, follow_redirects=False, **kwargs)


class GuardedAsyncTransport(httpx.AsyncBaseTransport):
    """An httpx transport for LiteLLM: each connection obeys ``current_policy``. One pool
    per event loop, since pooled connections belong to the loop that opened them."""

    def __init__(self):
        self._pools: dict[int, tuple] = {}

    def _transport(self) -> httpx.AsyncHTTPTransport:
        loop = asyncio.get_running_loop()
        entry = self._pools.get(id(loop))
        if entry is None or entry[0]() is not loop:
            self._pools = {k: v for k, v in self._pools.items() if v[0]() is not None}
            transport = httpx.AsyncHTTPTransport(verify=tls_context())
            transport._pool = httpcore.AsyncConnectionPool(
                ssl_context=tls_context(), network_backend=_AsyncBackend()
            )
            entry = self._pools[id(loop)] = (weakref.ref(loop), transport)
        return entry[1]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport().handle_async_request(request)

    async def aclose(self) -> None:
        entry = self._pools.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].aclose()
