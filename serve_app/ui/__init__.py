"""The cockpit: a web UI over jobs, sweeps and the cluster, served by the API's own app.

Its pages are plain Starlette routes (:func:`serve_app.ui.routes.ui_routes`), outside the API's
``/v1`` routers, so the API's bearer-token and JSON-body dependencies do not apply to them:
they sign in with a session cookie (:mod:`serve_app.ui.session`) and read the same service
layer as the API (``JobService`` and the access rules of ``railyard.control.access``)."""

from __future__ import annotations

from fastapi import FastAPI

from serve_app.ui.routes import ui_routes


def install_ui(app: FastAPI) -> None:
    """Add the UI's pages and static files to ``app``."""
    app.router.routes.extend(ui_routes())
