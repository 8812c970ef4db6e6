"""GET /healthz: liveness, and whether the job database answers. Needs no token."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from serve_app.deps import Service

router = APIRouter()


@router.get("/healthz")
def healthz(svc: Service) -> dict[str, str]:
    """Liveness and database reachability."""
    with svc.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok"}
