"""What the OpenAPI schema (``/openapi.json``, shown by ``/docs``) says beyond FastAPI's defaults.

The predict and explain bodies are read by hand (one record or a list, validated against the
bundle's schema), so their request bodies are declared here from the generated record model;
each route lists the 4xx/5xx answers it gives, all ``{"detail": ...}`` (the ``Error`` schema);
routes the access matrix guards name the bearer scheme and list 401 and 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from dataflywheel.serve.auth import ENV_VAR, AccessMatrix

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error", "type": "object", "required": ["detail"],
    "properties": {
        "detail": {"description": "a one-line message, or a list of {loc, msg, type} for a validation error"},
        "error": {"type": "string", "description": "the error's kind, when the server raised it"},
        "where": {"type": ["string", "null"], "description": "the field or setting at fault"},
        "fix": {"type": ["string", "null"], "description": "what to do about it"},
    },
}
BEARER = "bearerAuth"

STATUS: dict[int, str] = {
    400: "malformed JSON, or an empty body",
    401: f"no bearer token ({ENV_VAR} is set)",
    403: "wrong bearer token",
    404: "no such prediction",
    409: "conflict",
    413: "body over serve.max_body_bytes, or more records than serve.max_records",
    422: "a record or field fails validation (the detail names it)",
    501: "this feature is not installed",
    503: "not ready: the model worker or the log writer is not running",
}


def errors(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error ``codes`` (descriptions overridable as ``_409="..."``)."""
    return {code: {"description": descriptions.get(f"_{code}", STATUS[code]),
                   "content": {"application/json": {"schema": ERROR_REF}}} for code in codes}


def records_body(record: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a body of one record or a non-empty list of records."""
    schema = record.model_json_schema()
    return json_body({"anyOf": [schema, {"type": "array", "items": schema, "minItems": 1}]})


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document_access(app: FastAPI, matrix: AccessMatrix) -> None:
    """Add 401/403 and the bearer requirement to each route the matrix guards once a token is
    set, and the ``Error`` and bearer components to the schema."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        access = matrix.access_of(route.path)
        if access is None or matrix.class_needs_token(access):
            route.responses = {**route.responses, **errors(401, 403)}
            route.openapi_extra = {**(route.openapi_extra or {}), "security": [{BEARER: []}]}
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI keeps it as app.openapi_schema
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        components.setdefault("securitySchemes", {})[BEARER] = {
            "type": "http", "scheme": "bearer", "description": f"the value of {ENV_VAR}"}
        return schema

    # FastAPI's documented way to extend the schema is to replace app.openapi; mypy forbids
    # assigning to a method.
    app.openapi = openapi  # type: ignore[method-assign]
