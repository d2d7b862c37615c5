"""The fields a `--set field=value` may name: read from the server's own OpenAPI schema
(/api/schema/), so they are always this server's. The API ignores a field its serializer
does not have (a typo like `is_actve=true` would change nothing and exit 0); the CLI
refuses it before sending anything."""

import difflib

from .client import USAGE, CliError

SCHEMA = "/api/schema/"


def _matches(template: str, path: str) -> bool:
    """Whether ``path`` (/api/gateway/providers/12) is ``template``'s (…/providers/{id})."""
    want, got = template.strip("/").split("/"), path.strip("/").split("/")
    return len(want) == len(got) and all(
        w == g or (w.startswith("{") and w.endswith("}") and g)
        for w, g in zip(want, got, strict=True)
    )


def _operation(schema: dict, path: str, method: str) -> dict | None:
    """The schema's operation for ``method`` on ``path``."""
    paths = schema.get("paths")
    if not isinstance(paths, dict):
        return None
    # A literal segment wins over a {placeholder} (…/keys/{id} vs …/config/apply).
    for template in sorted(paths, key=lambda t: t.count("{")):
        operations = paths[template]
        if _matches(template, path) and isinstance(operations, dict):
            operation = operations.get(method.lower())
            return operation if isinstance(operation, dict) else None
    return None


def _resolve(schema: dict, node):
    """``node`` with its $ref followed (local references only)."""
    for _ in range(10):
        if not isinstance(node, dict) or "$ref" not in node:
            return node
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return None
        node = schema
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
    return None


def _body(schema: dict, path: str, method: str) -> tuple[dict | None, dict | None]:
    """The JSON request body's schema ``method`` ``path`` takes and its properties (None
    where the schema does not describe them)."""
    operation = _operation(schema, path, method)
    if operation is None:
        return None, None
    content = (operation.get("requestBody") or {}).get("content") or {}
    media = content.get("application/json") if isinstance(content, dict) else None
    body = _resolve(schema, media.get("schema") if isinstance(media, dict) else None)
    properties = body.get("properties") if isinstance(body, dict) else None
    return body, properties if isinstance(properties, dict) else None


def body_fields(schema: dict, path: str, method: str) -> tuple[set, set] | None:
    """(writable, read-only) fields of the request body ``method`` ``path`` takes, or None
    when the schema does not say (an operation or body it does not describe)."""
    body, properties = _body(schema, path, method)
    if not properties:
        return None
    if body.get("additionalProperties") not in (None, False):
        return None  # a free-form object: any field is one
    read_only = {
        n for n, spec in properties.items() if isinstance(spec, dict) and spec.get("readOnly")
    }
    return set(properties) - read_only, read_only


def text_fields(schema: dict, path: str, method: str) -> set:
    """The body's fields whose schema type is text ("string")."""
    _body_schema, properties = _body(schema, path, method)
    texts = set()
    for name, spec in (properties or {}).items():
        spec = _resolve(schema, spec)
        if isinstance(spec, dict) and spec.get("type") == "string":
            texts.add(name)
    return texts


def check(client, path: str, method: str, body: dict, typed: set, what: str) -> set:
    """Refuse (usage error) a field of ``body`` the resource does not have, and a read-only
    one typed with --set (``typed``): a --file may hold a record's read-only fields, as
    `get --json` prints it. Nothing is checked when the server has no schema to ask.
    Returns the body's text fields (empty when the schema does not say)."""
    if not body:
        return set()
    try:
        schema = client.get(SCHEMA, format="json")
    except CliError:
        return set()  # an older server, or one whose schema is not served: the API decides
    if not isinstance(schema, dict):
        return set()
    fields = body_fields(schema, path, method)
    if fields is None:
        return set()
    texts = text_fields(schema, path, method)
    writable, read_only = fields
    unknown = sorted(f for f in body if f not in writable and f not in read_only)
    refused = sorted(f for f in body if f in read_only and f in typed)
    if not unknown and not refused:
        return texts
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(writable), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{what}: no field {name!r}{hint}")
    for name in refused:
        problems.append(f"{what}: {name!r} is read-only (the server sets it)")
    raise CliError(
        "; ".join(problems) + f". The fields it takes: {', '.join(sorted(writable))}.", USAGE
    )
