"""assert_openai_schema(body, name): a /v1 body against OpenAI's published OpenAPI spec.

The schemas are a subset of openai/openai-openapi's openapi.json, kept with its licence in
gateway/tests/fixtures/ (no network at test time). OpenAPI 3.1 is JSON Schema 2020-12 but
for a few leftovers of 3.0 (``nullable: true``), read here as "or null".

Strict by default: an object whose schema lists its properties may not carry others (a
field OpenAI does not send, such as LiteLLM's ``provider_specific_fields``, breaks typed
clients that validate responses). Objects whose schema is a piece of an ``allOf`` are
left open: their siblings add properties.
"""

import copy
import json
from functools import cache
from pathlib import Path

import jsonschema

FIXTURE = Path(__file__).parent / "fixtures" / "openai-openapi-subset.json"
PREFIX = "#/components/schemas/"


def _nullable(node):
    """``nullable: true`` (OpenAPI 3.0) as JSON Schema: the schema, or null."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def _composed_refs(node, out: set) -> set:
    """The schemas referenced from an allOf (directly): they must stay open."""
    if isinstance(node, dict):
        for part in node.get("allOf", ()):
            if isinstance(part, dict) and "$ref" in part:
                out.add(part["$ref"][len(PREFIX) :])
        for value in node.values():
            _composed_refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _composed_refs(value, out)
    return out


def _closed(node, inside_composition=False):
    """Objects that list their properties refuse others (unless the schema says)."""
    if isinstance(node, list):
        return [_closed(n, inside_composition) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "allOf":
            out[key] = [_closed(v, True) for v in value]
        elif key == "properties":
            out[key] = {name: _closed(v) for name, v in value.items()}
        else:
            out[key] = _closed(value)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and "unevaluatedProperties" not in node
        and not inside_composition
    ):
        out["unevaluatedProperties"] = False
    return out


@cache
def _document(strict: bool) -> dict:
    doc = json.loads(FIXTURE.read_text())
    schemas = {name: _nullable(s) for name, s in doc["components"]["schemas"].items()}
    if strict:
        open_ones = _composed_refs(schemas, set())
        schemas = {name: s if name in open_ones else _closed(s) for name, s in schemas.items()}
    return {"components": {"schemas": schemas}}


def schema_names() -> list[str]:
    return sorted(_document(False)["components"]["schemas"])


def openai_schema_errors(body, schema_name: str, *, strict: bool = True) -> list[str]:
    doc = _document(strict)
    if schema_name not in doc["components"]["schemas"]:
        raise KeyError(f"{schema_name} is not in {FIXTURE.name}")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": PREFIX + schema_name,
        **copy.copy(doc),
    }
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
        for e in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path)))
    ]


def assert_openai_schema(body, schema_name: str, *, strict: bool = True) -> None:
    """Fail with every place ``body`` breaks OpenAI's schema ``schema_name``."""
    problems = openai_schema_errors(body, schema_name, strict=strict)
    assert not problems, f"not a valid {schema_name}:\n" + "\n".join(problems[:20])
