"""The REST API as a FastAPI app. Importable without a running Ray; the Ray Serve deployment in
serve_app/deployment.py wraps it. Routes live in serve_app.routes, their dependencies in
serve_app.deps, the answers' schemas in serve_app.schemas and serve_app.errors."""

from __future__ import annotations

import gc

from fastapi import Depends, FastAPI

from serve_app.deps import ServiceFactory, authorize, default_service_factory
from serve_app.errors import install_exception_handlers
from serve_app.json_body import check_json_body
from serve_app.openapi import document_spec_schema
from serve_app.routes import api_router
from serve_app.ui import install_ui

__all__ = ["ServiceFactory", "create_app", "default_service_factory"]


def create_app(service_factory: ServiceFactory | None = None) -> FastAPI:
    """The Railyard API. Pass a factory to swap the database or backend (tests do)."""
    app = FastAPI(title="Railyard", version="0.1.0",
                  description="Send a training spec; get a tracked job, a model, metrics, logs.",
                  # the token first, then the body (read once, checked as JSON: 413, 422)
                  dependencies=[Depends(authorize), Depends(check_json_body)])
    app.state.service_factory = service_factory or default_service_factory()
    install_exception_handlers(app)
    app.include_router(api_router)
    # The web UI: Starlette routes outside the app-wide bearer-token and JSON-body
    # dependencies above (they apply to the API's routes); it signs in with a session cookie.
    install_ui(app)
    document_spec_schema(app)
    return app


def freeze_startup_objects() -> None:
    """Take what a server process holds once it has started (its modules, the app) out of
    the garbage collector's full collections, which otherwise walk those ~265,000 objects
    every few hundred requests and stall the request being served ~170 ms; frozen, a full
    collection takes ~1 ms (benchmarks/README.md, the job list on a million jobs). Call it
    once, when the process is ready to serve: what is frozen is never collected."""
    gc.collect()
    gc.freeze()
