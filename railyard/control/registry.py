"""The model registry's rules: who reads and moves which model's aliases, and what the API
answers. Team scoping is the jobs' (railyard.control.access): a team reads and moves only the
models it owns (a model's owner is its jobs' ``owner``); an admin token all of them. Every
alias move is recorded with who moved it and why (``person`` here; ``gate`` for the promotion
gate, railyard.execution.promotion).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import Engine

from railyard.control.access import Caller, owner_filter
from railyard.errors import ForbiddenError, NotFoundError, SpecError
from railyard.jobstore import registry
from railyard.spec.promotion import ALIAS_PATTERN

MODEL_REF_PREFIX = "models:/"


def check_model(caller: Caller, owner: str) -> None:
    """403 unless ``caller`` may read and move the models of ``owner``."""
    if not caller.is_admin and owner != caller.team:
        raise ForbiddenError(
            f"models of {owner!r} are not your team's; this token reads and moves the models "
            f"of team {caller.team!r} only (or use an admin token)",
            details=[{"field": "owner", "message": "owned by another team",
                      "team": caller.team}])


def check_alias_name(alias: str) -> None:
    """422 unless ``alias`` is a valid alias name."""
    if not re.fullmatch(ALIAS_PATTERN, alias):
        raise SpecError(f"alias {alias!r}: start with a letter and use letters, digits, '_' or "
                        "'-' (at most 128 characters), e.g. 'production'",
                        details=[{"field": "alias", "message": "invalid alias name"}])


def list_models(engine: Engine, *, caller: Caller, owner: str | None = None,
                q: str | None = None) -> list[dict[str, Any]]:
    """The registered models ``caller`` may see (its team's; all for an admin), with their
    latest version and aliases; ``q`` matches inside the name."""
    return [{"owner": m.owner, "name": m.name, "latest_version": m.latest_version,
             "versions": m.versions, "aliases": m.aliases}
            for m in registry.list_models(engine, owner=owner_filter(caller, owner), q=q)]


def show_model(engine: Engine, *, caller: Caller, owner: str, name: str) -> dict[str, Any]:
    """``{owner, name, versions: [...], aliases: {alias: version}, alias_events: [...]}``;
    404 for a model with no registered version."""
    check_model(caller, owner)
    versions = registry.list_versions(engine, owner=owner, name=name)
    if not versions:
        raise NotFoundError(f"no registered model {owner}/{name}: a model is registered when "
                            "one of its jobs succeeds (railyard models list shows them)")
    return {"owner": owner, "name": name,
            "versions": [registry.version_summary(v) for v in versions],
            "aliases": registry.aliases_of(engine, owner=owner, name=name),
            "alias_events": [event_summary(e) for e in
                             registry.alias_events(engine, owner=owner, name=name)]}


def event_summary(event: Any) -> dict[str, Any]:
    """An alias move as the API shows it."""
    return {"alias": event.alias, "from_version": event.from_version,
            "to_version": event.to_version, "at": event.at, "actor": event.actor,
            "reason": event.reason, "job_id": event.job_id, "message": event.message}


def get_alias(engine: Engine, *, caller: Caller, owner: str, name: str,
              alias: str) -> dict[str, Any]:
    """The version ``alias`` points at, with its job id; 404 for an unknown alias."""
    check_model(caller, owner)
    found = registry.aliased_version(engine, owner=owner, name=name, alias=alias)
    if found is None:
        raise NotFoundError(f"model {owner}/{name} has no alias {alias!r}; set one with PUT "
                            f"/v1/models/{owner}/{name}/aliases/{alias} {{\"version\": N}}")
    row, version = found
    return {"owner": owner, "name": name, "alias": alias, "version": row.version,
            "updated_at": row.updated_at,
            **({k: v for k, v in registry.version_summary(version).items() if k != "version"}
               if version is not None else {})}


def set_alias(engine: Engine, *, caller: Caller, owner: str, name: str, alias: str,
              version: int, message: str | None = None) -> dict[str, Any]:
    """Point ``alias`` at ``version`` by hand (recorded as a ``person`` move by the caller's
    team); 404 for a version that does not exist."""
    check_model(caller, owner)
    check_alias_name(alias)
    if registry.get_version(engine, owner=owner, name=name, version=version) is None:
        known = [v.version for v in registry.list_versions(engine, owner=owner, name=name)]
        raise NotFoundError(
            f"model {owner}/{name} has no version {version}"
            + (f"; its versions are {', '.join(map(str, known))}" if known else
               ": it has no registered version"),
            details=[{"field": "version", "message": "no such version"}])
    registry.set_alias(engine, owner=owner, name=name, alias=alias, version=version,
                       actor=actor_of(caller), reason="person", message=message)
    return get_alias(engine, caller=caller, owner=owner, name=name, alias=alias)


def delete_alias(engine: Engine, *, caller: Caller, owner: str, name: str,
                 alias: str) -> None:
    """Remove ``alias`` (recorded); 404 when there is none."""
    check_model(caller, owner)
    if registry.delete_alias(engine, owner=owner, name=name, alias=alias,
                             actor=actor_of(caller), reason="person") is None:
        raise NotFoundError(f"model {owner}/{name} has no alias {alias!r}")


def actor_of(caller: Caller) -> str:
    """Who a move is recorded as: the team, and the token's display prefix when known."""
    return f"{caller.team} (token {caller.token_prefix})" if caller.token_prefix \
        else caller.team


def parse_model_ref(ref: str) -> tuple[str, str, str | int]:
    """``models:/OWNER/NAME@ALIAS`` or ``models:/OWNER/NAME/VERSION`` as (owner, name, alias
    or version number); a SpecError naming the expected forms otherwise."""
    body = ref.removeprefix(MODEL_REF_PREFIX)
    match = re.fullmatch(r"([^/@]+)/([^/@]+)(?:@([^/@]+)|/(\d+))", body) \
        if ref.startswith(MODEL_REF_PREFIX) else None
    if match is None:
        raise SpecError(f"{ref!r} is not a model reference: use models:/OWNER/NAME@ALIAS or "
                        "models:/OWNER/NAME/VERSION (or a job id)",
                        details=[{"field": "model", "message": "not a model reference"}])
    owner, name, alias, version = match.groups()
    return owner, name, (int(version) if version is not None else alias)
