"""Container health check: GET a URL on this container, exit 0 on a 2xx answer, 1 otherwise.

The argument is a path (``/health``), asked on 127.0.0.1 at the port the process listens on:
BONITO_AGENT_PORT in the agent's image, else PORT (the platform's), else 8000; or a whole URL.
The images carry no curl. The platform answers only the host names in ALLOWED_HOSTS (any
other Host header is a 400), so the request names the first of them, or HEALTHCHECK_HOST."""

import os
import sys
import urllib.request


def host_header() -> str | None:
    if os.environ.get("HEALTHCHECK_HOST"):
        return os.environ["HEALTHCHECK_HOST"]
    for name in os.environ.get("ALLOWED_HOSTS", "").split(","):
        name = name.strip().lstrip(".")
        if name and name != "*":
            return name
    return None


def target(arg: str) -> str:
    if not arg.startswith("/"):
        return arg  # a whole URL
    port = os.environ.get("BONITO_AGENT_PORT") or os.environ.get("PORT") or "8000"
    return f"http://127.0.0.1:{port.strip()}{arg}"


def main(url: str) -> int:
    url = target(url)
    request = urllib.request.Request(url)  # noqa: S310 (a fixed loopback URL from the image)
    host = host_header()
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310
            return 0 if 200 <= response.status < 300 else 1
    except Exception as exc:  # refused, timed out, 4xx/5xx: unhealthy, say why
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/api/health"))
