"""The registry of named workflows: ``train.workflow_name`` → a Workflow class.

Workflows are found in ``railyard.training.builtin``, in the top-level ``workflows`` package and
in installed packages' ``railyard.workflows`` entry points; never imported from a path named in
a spec. Finding a name reads module sources, not imports them: a job imports only the workflow
it runs.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.machinery
import logging
import pkgutil
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import cast

from railyard.errors import UnknownWorkflowError
from railyard.training.workflow import Workflow

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Workflow]] = {}
_loaded = False
_load_lock = threading.Lock()


def register_workflow(cls: type[Workflow]) -> type[Workflow]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"workflow name {cls.name!r} is taken by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _package_modules(package_name: str) -> list[tuple[str, Path]]:
    """(module name, file) of every module in a package, without importing the modules."""
    try:
        package = importlib.import_module(package_name)
    except ModuleNotFoundError as exc:
        if exc.name == package_name:
            return []
        raise
    # A package's directory on disk is searched by a FileFinder, which has the ``path``.
    return [(f"{package_name}.{info.name}",
             Path(cast(importlib.machinery.FileFinder, info.module_finder).path)
             / f"{info.name}.py")
            for info in pkgutil.iter_modules(getattr(package, "__path__", []))
            if not info.ispkg]


def _declared_names(source: Path) -> list[str]:
    """Workflow names a module registers, read from its source: classes decorated with
    ``register_workflow`` that assign ``name = "..."``."""
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError):
        return []
    names = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or not any(
                getattr(d, "id", getattr(d, "attr", None)) == "register_workflow"
                for d in node.decorator_list):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "name"
                                                    for t in stmt.targets) \
                    and isinstance(stmt.value, ast.Constant):
                names.append(str(stmt.value.value))
    return names


_index: dict[str, str] | None = None


def _workflow_index() -> dict[str, str]:
    """Workflow name → module that defines it, found without importing any workflow module
    (torch alone costs seconds; a job imports only the workflow it runs)."""
    global _index
    with _load_lock:
        if _index is None:
            index: dict[str, str] = {}
            for package in ("railyard.training.builtin", "workflows"):
                for module, path in _package_modules(package):
                    for name in _declared_names(path):
                        index.setdefault(name, module)
            for ep in entry_points(group="railyard.workflows"):
                index.setdefault(ep.name, ep.value.split(":", 1)[0])
            _index = index
        return _index


def _import_for(name: str) -> None:
    module = _workflow_index().get(name)
    if module is not None and name not in _REGISTRY:
        importlib.import_module(module)


def load_workflows() -> None:
    """Import every workflow module (what listing all workflows needs)."""
    global _loaded
    if _loaded:
        return
    for name in list(_workflow_index()):
        try:
            _import_for(name)
        except Exception:  # a broken plugin must not take the API down
            log.exception("could not load workflow %s", name)
    _loaded = True


def get_workflow(name: str) -> type[Workflow]:
    """The workflow class registered as ``name`` (importing only its module)."""
    if name not in _REGISTRY:
        _import_for(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(set(_REGISTRY) | set(_workflow_index()))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownWorkflowError(
            f"train.workflow_name: no workflow named {name!r}{hint} Registered: "
            f"{', '.join(known)}",
            details=[{"field": "train.workflow_name", "message": "unknown workflow"}]) from None


def available_workflows() -> dict[str, type[Workflow]]:
    """All registered workflows by name."""
    load_workflows()
    return dict(sorted(_REGISTRY.items()))
