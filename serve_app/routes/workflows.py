"""GET /v1/workflows: the registered training workflows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from railyard.training.registry import available_workflows

router = APIRouter()


@router.get("/v1/workflows")
def workflows() -> list[dict[str, Any]]:
    """Registered workflows and the hyperparameters each accepts."""
    return [{"name": name, "framework": cls.framework, "doc": (cls.__doc__ or "").strip(),
             "derived_columns": sorted(cls.derived_columns),
             "params": sorted(cls.param_names())}
            for name, cls in available_workflows().items()]
