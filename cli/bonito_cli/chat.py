"""`bonito chat`: the OpenAI-compatible /v1 API with a bn- key, streamed to the terminal."""

import json
import sys

import click
import httpx

from .client import AUTH, USAGE, CliError, api_message
from .output import print_json


def _v1(state, api_key) -> httpx.Client:
    key = api_key or state.profile.api_key
    if not key:
        raise CliError(
            "chat needs an API key (bn-…): pass --api-key, set BONITO_API_KEY, or save one with "
            "`bonito auth login --api-key`.",
            AUTH,
        )
    return httpx.Client(
        base_url=state.profile.url + "/v1",
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(120.0, connect=10.0),
    )


def _fail(response: httpx.Response):
    response.read()
    raise CliError(api_message(response), AUTH if response.status_code in (401, 403) else 1)


def _default_model(http: httpx.Client) -> str:
    response = http.get("/models")
    if response.status_code >= 400:
        _fail(response)
    data = response.json().get("data") or []
    if not data:
        raise CliError("This key can call no model: pass --model.", USAGE)
    return data[0]["id"]


def complete(http, model, messages, stream: bool, out) -> tuple[str, dict | None]:
    """One completion; with ``stream`` the text is written to ``out`` as it arrives."""
    body = {"model": model, "messages": messages, "stream": stream}
    try:
        if not stream:
            response = http.post("/chat/completions", json=body)
            if response.status_code >= 400:
                _fail(response)
            data = response.json()
            return data["choices"][0]["message"].get("content") or "", data
        text = []
        with http.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code >= 400:
                _fail(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                if "error" in event:
                    raise CliError(event["error"].get("message", "the stream failed"))
                for choice in event.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        text.append(piece)
                        out.write(piece)
                        out.flush()
        out.write("\n")
        return "".join(text), None
    except httpx.ConnectError as exc:
        raise CliError(f"Cannot reach {http.base_url}: {exc}. Is the server running?") from None
    except httpx.TimeoutException:
        raise CliError("The gateway did not answer in time.") from None
    except httpx.HTTPError as exc:
        raise CliError(f"The request failed: {exc}") from None


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
@click.option("--quiet", "-q", is_flag=True, help="Print only the answer.")
@click.pass_context
def chat(ctx, prompt, model, system, api_key, no_stream, as_json, quiet):
    """Talk to a model through the gateway: one prompt, stdin, or an interactive session.

    With PROMPT (or text on stdin) it answers once and exits; with neither, on a terminal,
    it starts a conversation (type /exit or Ctrl-D to leave, /reset to start over).

    \b
    Examples:
      bonito chat "Write a haiku about tuna" --model gpt-4o-mini
      git diff | bonito chat --system "Review this diff" --model gpt-4o
      bonito chat --json "ping" | jq .usage
      bonito chat
    """
    from .main import State

    state = ctx.find_object(State)
    as_json = as_json or state.json
    http = _v1(state, api_key)
    model = model or _default_model(http)
    history = [{"role": "system", "content": system}] if system else []
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is not None:
        if not prompt.strip():
            raise CliError("The prompt is empty.", USAGE)
        text, data = complete(
            http,
            model,
            [*history, {"role": "user", "content": prompt}],
            not (no_stream or as_json),
            sys.stdout,
        )
        if as_json:
            print_json(data)
        elif data is not None:
            click.echo(text)
        return
    click.echo(f"Chatting with {model}. /exit or Ctrl-D to leave, /reset to start over.", err=True)
    messages = list(history)
    while True:
        try:
            line = click.prompt("you", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.exceptions.Abort):
            click.echo("", err=True)
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            messages = list(history)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        text, data = complete(http, model, messages, not no_stream, sys.stdout)
        if data is not None:
            click.echo(text)
        messages.append({"role": "assistant", "content": text})
