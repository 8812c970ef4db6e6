"""Tweaks to the generated OpenAPI document: the TrainingSpec request body and the error
answers every route can give."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from railyard.spec import TrainingSpec
from serve_app.deps import PUBLIC_PATHS
from serve_app.errors import ERROR_MEANINGS, ErrorBody


def document_spec_schema(app: FastAPI) -> None:
    """POST /v1/jobs reads its body by hand (for size limits and our error format); put the
    TrainingSpec schema into the OpenAPI components so clients and fuzzers still see it. Also
    document the error answers every route can give (see :func:`_document_errors`)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (TrainingSpec, ErrorBody):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        _document_errors(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(schema: dict[str, Any]) -> None:
    """Every route can answer 503 (database down); every route but the public ones 401 (no or
    bad token), and the public ones need no token (``security: []``); every ``{job_id}`` route
    403 and 404 (:func:`serve_app.deps.authorize` checks the job's team). FastAPI's own 422
    schema (``{"detail": [...]}``) is replaced by ours: the handlers in serve_app.errors answer
    every error as :class:`ErrorBody`."""
    for path, operations in schema.get("paths", {}).items():
        public = path in PUBLIC_PATHS
        codes = {503} | (set() if public else {401}) \
            | ({403, 404} if "{job_id}" in path else set())
        for operation in operations.values():
            if public:
                operation["security"] = []
            responses = operation.setdefault("responses", {})
            for code in sorted(codes | ({422} if "422" in responses else set())):
                responses[str(code)] = {"description": ERROR_MEANINGS[code], "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
