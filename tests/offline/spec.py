"""The vendor's OpenAPI description (the copy beside this file) as jsonschema validators, and the error envelope.

``response_validator(path, method)`` checks a 200 body against the operation's own response schema, every ``$ref``
resolved inside the document. ``form_errors(path, fields)`` checks a multipart request's fields against the
operation's request-body schema: every field must be a property of it, the required ones present, and each value
must parse as the property's type (multipart carries text, so ``"12"`` is an integer, ``"true"`` a boolean).
``ENVELOPE`` is the shape every error but a 422 has; ``VALIDATION`` (the spec's own ``HTTPValidationError``) a 422's.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).with_name("vendor-openapi-subset.json")
_URI = "urn:vendor-openapi"

#: the current error envelope (speech-to-speech.md, "Responses and errors"); strict: nothing else in ``detail``
ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "additionalProperties": False,
    "properties": {"detail": {
        "type": "object",
        "required": ["type", "code", "message", "request_id", "param", "status"],
        "additionalProperties": False,
        "properties": {
            "type": {"enum": ["validation_error", "invalid_request", "authentication_error", "billing_error",
                              "authorization_error", "not_found", "rate_limit_error", "internal_error",
                              "service_unavailable"]},
            "code": {"type": "string", "pattern": "^[a-z_]+$"},
            "message": {"type": "string", "minLength": 1},
            "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "param": {"type": ["string", "null"]},
            "status": {"type": "string", "pattern": "^[a-z_]+$"},
        },
    }},
}


@cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())  # type: ignore[no-any-return]


@cache
def _registry() -> Registry:
    return Registry().with_resource(_URI, Resource.from_contents(spec(), default_specification=DRAFT202012))


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of ``schema``, whose ``$ref``s (``#/components/...``) point into the spec."""
    def rebase(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (f"{_URI}{v}" if k == "$ref" and v.startswith("#") else rebase(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rebase(item) for item in node]
        return node

    return Draft202012Validator(rebase(schema), registry=_registry())


def operation(path: str, method: str = "get") -> dict[str, Any]:
    return spec()["paths"][path][method]  # type: ignore[no-any-return]


def response_validator(path: str, method: str = "get", status: str = "200") -> Draft202012Validator:
    return validator(operation(path, method)["responses"][status]["content"]["application/json"]["schema"])


VALIDATION = validator({"$ref": "#/components/schemas/HTTPValidationError"})
ENVELOPE_VALIDATOR = Draft202012Validator(ENVELOPE)


def errors_of(validator_: Draft202012Validator, body: Any) -> list[str]:
    """Every problem, as 'path: message' lines (empty when the body is valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator_.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))]


def coerce(value: str, schema: dict[str, Any]) -> Any:
    """A multipart text value read as the JSON type its schema wants (first alternative that fits)."""
    options = schema.get("anyOf", [schema])
    for option in options:
        kind = option.get("type")
        if kind == "integer" and value.lstrip("-").isdigit():
            return int(value)
        if kind == "boolean" and value in ("true", "false"):
            return value == "true"
        if kind == "string":
            return value
    return value


def form_errors(path: str, fields: dict[str, Any], method: str = "post") -> list[str]:
    """Problems of a multipart request's ``fields`` (text values; files as ``bytes``) against the request schema."""
    ref = operation(path, method)["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    body_schema = spec()["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    properties = body_schema["properties"]
    unknown = [f"{name}: not a field of the request schema" for name in fields if name not in properties]
    typed = {name: ("<binary>" if isinstance(value, bytes) else coerce(value, properties[name]))
             for name, value in fields.items() if name in properties}
    strict = {**body_schema, "additionalProperties": False}
    return unknown + errors_of(validator(strict), typed)
