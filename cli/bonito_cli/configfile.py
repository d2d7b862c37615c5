"""`config apply`'s `env:NAME` values: filled from this environment, only where a secret
belongs (api_key, credentials.*), and never printed back."""

import json
import os
import re

from .client import USAGE, CliError

# A `key: value` line of a block mapping, after any `- ` list markers.
_LINE = re.compile(r"""^(?P<indent>[ ]*(?:-[ ]+)*)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$""")
_ENV = re.compile(r"""^(\s*)(["']?)env:([A-Za-z_][A-Za-z0-9_]*)\2(\s*(#.*)?)$""")
_BLOCK = re.compile(r"""^\s*[|>][-+0-9]*\s*(#.*)?$""")
SECRET_KEYS = {"api_key"}
SECRET_PARENTS = {"credentials"}


def fill_env(text: str) -> tuple[str, list[str]]:
    """``text`` with each `api_key: env:NAME` (or `env:NAME` under `credentials:`) replaced
    by NAME's value as a quoted YAML string, and the values filled. A `key: env:NAME` for
    any other key is refused (exit 2): the file could otherwise copy a CI secret into a name
    that everyone in the org can read. Other text (inline {…} mappings, lists, block
    scalars) is never filled; the server refuses an env: value where it means a secret."""
    out, secrets = [], []
    parents: list[tuple[int, str]] = []  # (indent, key) of the mappings we are inside
    block_indent = None  # inside a | or > block scalar: its lines are text, not keys
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if block_indent is not None:
            if not stripped or indent > block_indent:
                out.append(line)
                continue
            block_indent = None
        match = _LINE.match(line)
        if not match or stripped.startswith("#"):
            out.append(line)  # not filled: the server refuses an env: value it is sent
            continue
        key_indent = len(match.group("indent"))
        key, rest = match.group("key"), match.group("rest")
        while parents and parents[-1][0] >= key_indent:
            parents.pop()
        if _BLOCK.match(rest):
            block_indent = key_indent
        env = _ENV.match(rest)
        if env:
            allowed = key in SECRET_KEYS or any(k in SECRET_PARENTS for _, k in parents)
            if not allowed:
                raise CliError(
                    f"line {number}: {key}: env:{env.group(3)} is refused; env:NAME is filled "
                    "only in api_key and credentials fields, so a secret cannot land in a "
                    "name or description.",
                    USAGE,
                )
            name = env.group(3)
            if name not in os.environ:
                raise CliError(f"the file names env:{name}, which is not set here.", USAGE)
            value = os.environ[name]
            if value:
                secrets.append(value)
            line = f"{line[: match.start('rest')]}{env.group(1)}{json.dumps(value)}{env.group(4)}"
        if not rest.strip() or rest.strip().startswith("#"):
            parents.append((key_indent, key))
        out.append(line)
    return "\n".join(out), secrets


def mask_secrets(data, secrets: list[str]):
    """``data`` (the server's answer) with every filled secret replaced by ***."""
    if not secrets:
        return data
    if isinstance(data, dict):
        return {k: mask_secrets(v, secrets) for k, v in data.items()}
    if isinstance(data, list):
        return [mask_secrets(v, secrets) for v in data]
    if isinstance(data, str):
        for secret in sorted(secrets, key=len, reverse=True):
            data = data.replace(secret, "***")
    return data
