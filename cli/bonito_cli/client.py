"""The REST API and /v1 over httpx; every failure becomes a CliError with the API's message."""

import httpx

from . import __version__

OK, FAILURE, USAGE, AUTH = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = FAILURE):
        super().__init__(message)
        self.code = code


def api_message(response: httpx.Response) -> str:
    """The message the server put in its body: DRF's detail or field errors, or /v1's
    OpenAI-shaped error; the status line when the body says nothing readable."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} {response.reason_phrase}"
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict) and body["error"].get("message"):
            return str(body["error"]["message"])
        if "detail" in body and len(body) == 1:
            detail = body["detail"]
            return " ".join(map(str, detail)) if isinstance(detail, list) else str(detail)
        parts = []
        for field, problems in body.items():
            problems = problems if isinstance(problems, list) else [problems]
            text = " ".join(p if isinstance(p, str) else str(p) for p in problems)
            parts.append(text if field in ("detail", "non_field_errors") else f"{field}: {text}")
        if parts:
            return "; ".join(parts)
    return f"HTTP {response.status_code} {response.reason_phrase}"


def raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message = api_message(response)
    if response.status_code == 404 and message.startswith("HTTP 404"):
        # Not the API's "not found" (that has a JSON body): the server has no such endpoint.
        message = (
            f"{response.request.url.path}: this server has no such endpoint "
            "(an older Bonito, or the URL is not a Bonito server)."
        )
    if response.status_code in (401, 403):
        raise CliError(message, AUTH)
    raise CliError(message, FAILURE)


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        headers = {"User-Agent": f"bonito-cli/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs) -> httpx.Response:
        if auth and not self.token:
            raise CliError("Not logged in: run `bonito auth login` or set BONITO_TOKEN.", AUTH)
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(f"Cannot reach {self.url}: {exc}. Is the server running?") from None
        except httpx.TimeoutException:
            raise CliError(f"{self.url} did not answer in time.") from None
        except httpx.HTTPError as exc:
            raise CliError(f"Talking to {self.url} failed: {exc}") from None
        raise_for(response)
        return response

    def get(self, path: str, **params):
        return self.request(
            "GET", path, params={k: v for k, v in params.items() if v is not None}
        ).json()

    def post(self, path: str, body=None):
        response = self.request("POST", path, json=body if body is not None else {})
        return response.json() if response.content else None

    def patch(self, path: str, body):
        return self.request("PATCH", path, json=body).json()

    def put(self, path: str, body):
        return self.request("PUT", path, json=body).json()

    def delete(self, path: str):
        self.request("DELETE", path)

    def list(self, path: str, limit: int | None = None, **params) -> list:
        """Every row of a list endpoint, following its pages (up to ``limit`` rows)."""
        rows: list = []
        page = 1
        while limit is None or len(rows) < limit:
            body = self.get(path, page=page, **params)
            if isinstance(body, list):  # not paginated
                rows = body
                break
            rows.extend(body.get("results", []))
            if not body.get("next"):
                break
            page += 1
        return rows if limit is None else rows[:limit]
