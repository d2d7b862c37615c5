"""`bonito chat`: the OpenAI-compatible /v1 API with a bn- key, streamed to the terminal."""

import json
import os
import stat
import sys

import click
import httpx

from .client import (
    AUTH,
    USAGE,
    CliError,
    api_message,
    clean_token,
    http_client,
    scheme_hint,
    server_url,
    shown_url,
)
from .output import error, print_json, safe


def _v1(state, api_key) -> httpx.Client:
    server_url(state.profile.url)  # a wrong URL is named as such, whatever the profile
    if state.profile.refused and not (api_key or state.profile.api_key):
        raise CliError(state.profile.refused, AUTH)
    key = clean_token(api_key, "API key") or clean_token(state.profile.api_key, "API key")
    if not key:
        raise CliError(
            "chat needs an API key (bn-…): pass --api-key, set BONITO_API_KEY, or save one with "
            "`bonito auth login --api-key`.",
            AUTH,
        )
    return http_client(
        base_url=server_url(state.profile.url) + "/v1",
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(120.0, connect=10.0),
    )


def _fail(response: httpx.Response):
    response.read()
    raise CliError(api_message(response), AUTH if response.status_code in (401, 403) else 1)


def _default_model(http: httpx.Client) -> str:
    """The first model the key may call. /v1/models is the only thing a bn- key can ask, and
    like every request with a valid key it is logged (one usage row, no tokens, no cost):
    pass --model or set BONITO_MODEL to skip it."""
    try:
        response = http.get("/models")
    except httpx.HTTPError as exc:
        raise CliError(
            f"Cannot reach {shown_url(http.base_url)}: {exc}{_hint(http, exc)}"
        ) from None
    if response.status_code >= 400:
        _fail(response)
    try:
        data = response.json().get("data") or []
        return str(data[0]["id"])
    except (ValueError, AttributeError, LookupError, TypeError):
        raise CliError(
            "This key can call no model (or /v1/models is not the gateway's): pass --model.", USAGE
        ) from None


def complete(http, model, messages, stream: bool, out) -> tuple[str, dict | None, dict]:
    """One completion; with ``stream`` the text is written to ``out`` as it arrives. Also
    the answer's headers (which model served it, and a smart route's tier and score)."""
    body = {"model": model, "messages": messages, "stream": stream}
    try:
        if not stream:
            response = http.post("/chat/completions", json=body)
            if response.status_code >= 400:
                _fail(response)
            try:
                data = response.json()
                text = data["choices"][0]["message"].get("content") or ""
                return text, data, dict(response.headers)
            except (ValueError, LookupError, TypeError, AttributeError):
                raise CliError("The gateway's answer is not a chat completion.") from None
        text = []
        with http.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code >= 400:
                _fail(response)
            headers = dict(response.headers)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    event = json.loads(payload)
                except ValueError:
                    continue  # not an event of the OpenAI stream (a proxy's keep-alive): skip
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    problem = event["error"]
                    message = problem.get("message") if isinstance(problem, dict) else problem
                    raise CliError(str(message or "the stream failed"))
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    piece = (delta or {}).get("content") if isinstance(delta, dict) else None
                    if isinstance(piece, str) and piece:
                        text.append(piece)
                        # The model's text, not escape sequences for this terminal.
                        out.write(safe(piece, multiline=True))
                        out.flush()
        out.write("\n")
        return "".join(text), None, headers
    except httpx.ConnectError as exc:
        raise CliError(
            f"Cannot reach {shown_url(http.base_url)}: {exc}"
            + (_hint(http, exc) or ". Is the server running?")
        ) from None
    except httpx.TimeoutException:
        raise CliError("The gateway did not answer in time.") from None
    except httpx.HTTPError as exc:
        raise CliError(f"The request failed: {exc}{_hint(http, exc)}") from None


def route_line(headers: dict) -> str | None:
    """Which model answered, and for a smart-routed request its tier, score and classifier,
    from the answer's headers: "model demo-chat-mini · tier demo-chat-mini · score 0.0712
    (rules)". None when the gateway named no model (not Bonito's /v1)."""
    model = headers.get("x-bonito-model-used")
    if not model:
        return None
    parts = [f"model {model}"]
    if headers.get("x-bonito-route-tier"):
        parts.append(f"tier {headers['x-bonito-route-tier']}")
    if headers.get("x-bonito-route-score"):
        classifier = headers.get("x-bonito-route-classifier")
        score = f"score {headers['x-bonito-route-score']}"
        parts.append(f"{score} ({classifier})" if classifier else score)
    return safe(" · ".join(parts))


def _hint(http: httpx.Client, exc: Exception) -> str:
    """The scheme hint for the server's root URL (the one --url takes, without /v1)."""
    hint = scheme_hint(str(http.base_url).rstrip("/").removesuffix("/v1"), exc)
    return f". {hint}" if hint else ""


def _piped(prompt) -> bool:
    """Whether stdin holds text for the prompt: anything but a terminal when there is no
    PROMPT; a pipe or a file when there is one (not /dev/null or an inherited socket)."""
    if sys.stdin is None or sys.stdin.isatty():
        return False
    if prompt is None:
        return True
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("prompt", required=False)
@click.option(
    "--model", "-m", envvar="BONITO_MODEL", help="Model (default: the first the key may call)."
)
@click.option("--system", help="A system message.")
@click.option("--api-key", help="A bn- key (env: BONITO_API_KEY).")
@click.option("--no-stream", is_flag=True, help="Wait for the whole answer.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the whole completion as JSON (no streaming)."
)
@click.option(
    "--quiet", "-q", is_flag=True, help="Print only the answer (no banner in a conversation)."
)
@click.option(
    "--show-route",
    is_flag=True,
    help="After each answer, print on stderr which model answered (and a smart route's tier and score).",
)
@click.pass_context
def chat(ctx, prompt, model, system, api_key, no_stream, as_json, quiet, show_route):
    """Talk to a model through the gateway: one prompt, stdin, or an interactive session.

    With PROMPT and/or text on stdin it answers once and exits (stdin is appended to the
    prompt after a blank line: `git diff | bonito chat "Review this"`); with neither, on a
    terminal, it starts a conversation (type /exit or Ctrl-D to leave, /reset to start
    over; an error is printed and the conversation goes on). Without --model it asks
    /v1/models first, which the gateway logs as one more request: pass --model (or
    BONITO_MODEL) to skip that.

    \b
    Examples:
      bonito chat "Write a haiku about tuna" --model gpt-4o-mini
      git diff | bonito chat --system "Review this diff" --model gpt-4o
      git diff | bonito chat "Review this" --model gpt-4o
      bonito chat --json "ping" | jq .usage
      bonito chat "Prove that 2 is prime" --model auto --show-route
      bonito chat
    """
    from .main import State

    state = ctx.find_object(State)
    as_json = as_json or state.json
    quiet = quiet or state.quiet
    if state.org:
        # A bn- key cannot say its org: --org is checked against the token instead
        # (exit 3 when it is another org's, or when there is no token to check it with).
        state.client  # noqa: B018
    http = _v1(state, api_key)
    history = [{"role": "system", "content": system}] if system else []
    if _piped(prompt):
        piped = sys.stdin.read()
        if prompt is None:
            prompt = piped
        elif piped.strip():
            prompt = f"{prompt}\n\n{piped}"
    model = model or _default_model(http)
    if prompt is not None:
        if not prompt.strip():
            raise CliError("The prompt is empty.", USAGE)
        text, data, headers = complete(
            http,
            model,
            [*history, {"role": "user", "content": prompt}],
            not (no_stream or as_json),
            sys.stdout,
        )
        if as_json:
            print_json(data)
        elif data is not None:
            click.echo(safe(text, multiline=True))
        _show_route(show_route, headers)
        return
    if not quiet:
        click.echo(
            safe(f"Chatting with {model}. /exit or Ctrl-D to leave, /reset to start over."),
            err=True,
        )
    messages = list(history)
    while True:
        try:
            line = input("you> ")
        except EOFError:  # Ctrl-D: the documented way out
            click.echo("", err=True)
            return
        except KeyboardInterrupt:  # Ctrl-C: interrupted, as shells count it
            click.echo("", err=True)
            sys.exit(130)
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            messages = list(history)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        try:
            text, data, headers = complete(http, model, messages, not no_stream, sys.stdout)
        except CliError as exc:
            # A refusal (429, a policy) ends this turn, not the conversation: say it, drop
            # the unanswered line, and let the user try again.
            error(exc)
            messages.pop()
            continue
        if data is not None:
            click.echo(safe(text, multiline=True))
        _show_route(show_route, headers)
        messages.append({"role": "assistant", "content": text})


def _show_route(wanted: bool, headers: dict) -> None:
    line = route_line(headers) if wanted else None
    if line:
        click.echo(f"[{line}]", err=True)
