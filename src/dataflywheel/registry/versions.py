"""The model registry: numbered versions, movable aliases and their audit history.

An alias (``champion``, ``challenger`` or any name) points at one version; every move is
appended to ``alias_history`` with its action and reason, so ``rollback`` can restore the
previous holder and ``flywheel models show`` can explain how a version got where it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from dataflywheel.errors import BundleIntegrityError, NotFoundError, StoreError
from dataflywheel.registry.bundle import verify_bundle
from dataflywheel.store import Project
from dataflywheel.store.metadata import AliasHistoryRow, AliasRow, ModelVersionRow, RunRow

CHAMPION = "champion"
CHALLENGER = "challenger"
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass
class VersionInfo:
    version: int
    run_id: str
    dataset_id: str
    model_type: str
    task: str
    metrics: dict[str, Any]
    artifact: str
    created_at: str
    verdict: dict[str, Any] | None
    aliases: list[str]


def _info(row: ModelVersionRow, aliases: list[str]) -> VersionInfo:
    return VersionInfo(
        version=row.version,
        run_id=row.run_id,
        dataset_id=row.dataset_id,
        model_type=row.model_type,
        task=row.task,
        metrics=dict(row.metrics),
        artifact=row.artifact,
        created_at=row.created_at.isoformat(timespec="seconds"),
        verdict=row.verdict,
        aliases=aliases,
    )


def aliases_of(project: Project) -> dict[int, list[str]]:
    with project.metadata.transaction() as s:
        out: dict[int, list[str]] = {}
        for a in s.scalars(select(AliasRow).order_by(AliasRow.name)):
            out.setdefault(a.version, []).append(a.name)
        return out


def list_versions(project: Project) -> list[VersionInfo]:
    by_version = aliases_of(project)
    with project.metadata.transaction() as s:
        rows = s.scalars(select(ModelVersionRow).order_by(ModelVersionRow.version)).all()
        return [_info(r, by_version.get(r.version, [])) for r in rows]


def resolve(project: Project, ref: str | int) -> VersionInfo:
    """A version by number (``3``, ``v3``) or by alias (``champion``)."""
    text = str(ref)
    with project.metadata.transaction() as s:
        if re.fullmatch(r"v?\d+", text):
            row = s.get(ModelVersionRow, int(text.lstrip("v")))
            if row is None:
                raise NotFoundError(f"no model version {text}", fix="`flywheel models list` shows the versions")
        else:
            alias = s.get(AliasRow, text)
            if alias is None:
                raise NotFoundError(f"no model has the alias {text!r}",
                                    fix="run `flywheel run` to train one, or `flywheel models list`")
            row = s.get(ModelVersionRow, alias.version)
            if row is None:
                raise NotFoundError(f"the alias {text!r} names model version {alias.version}, not in the store",
                                    fix=f"move the alias: `flywheel models promote <version> --alias {text}`")
    return _info(row, aliases_of(project).get(row.version, []))


def alias_version(project: Project, name: str) -> int | None:
    with project.metadata.transaction() as s:
        row = s.get(AliasRow, name)
        return row.version if row else None


def set_alias(project: Project, name: str, version: int, *, action: str = "set", reason: str = "") -> int | None:
    """Point ``name`` at ``version`` in one transaction with its audit row; return the previous holder."""
    if not _ALIAS.match(name):
        raise StoreError(f"invalid alias {name!r}", fix="use letters, digits, '-' or '_', starting with a letter")
    with project.metadata.transaction() as s:
        if s.get(ModelVersionRow, version) is None:
            raise NotFoundError(f"no model version {version}", fix="`flywheel models list` shows the versions")
        row = s.get(AliasRow, name)
        previous = row.version if row else None
        if row is None:
            s.add(AliasRow(name=name, version=version))
        else:
            row.version = version
            from dataflywheel.store.metadata import utcnow

            row.updated_at = utcnow()
        s.add(AliasHistoryRow(name=name, version=version, previous_version=previous, action=action, reason=reason))
    return previous


def verify_version(project: Project, version: int, *, alias: str) -> None:
    """Check the bundle of ``version`` against its manifest before ``alias`` may point at it:
    a server started on an alias must be able to load what it names."""
    with project.metadata.transaction() as s:
        row = s.get(ModelVersionRow, version)
        if row is None:
            raise NotFoundError(f"no model version {version}", fix="`flywheel models list` shows the versions")
        artifact = row.artifact
    try:
        verify_bundle(project.artifacts.path(artifact))
    except BundleIntegrityError as exc:
        raise BundleIntegrityError(f"model v{version} fails verification, {alias} not moved: {exc.message}",
                                   where=exc.where, fix=exc.fix) from None


def promote(project: Project, version: int, *, alias: str = CHAMPION, reason: str = "manual promotion") -> int | None:
    verify_version(project, version, alias=alias)
    return set_alias(project, alias, version, action="promote", reason=reason)


def rollback(project: Project, *, alias: str = CHAMPION, reason: str = "manual rollback") -> tuple[int, int]:
    """Move ``alias`` back to the version it held before its current one; return (from, to)."""
    current = alias_version(project, alias)
    if current is None:
        raise NotFoundError(f"no model has the alias {alias!r}", fix="nothing to roll back")
    with project.metadata.transaction() as s:
        q = (
            select(AliasHistoryRow)
            .where(AliasHistoryRow.name == alias)
            .order_by(AliasHistoryRow.id.desc())
        )
        history = s.scalars(q).all()
    # Walk back past versions the alias has already been rolled back from.
    target = None
    skip: set[int] = {current}
    for h in history:
        if h.action == "rollback" and h.previous_version is not None:
            skip.add(h.previous_version)
        if h.previous_version is not None and h.previous_version not in skip:
            target = h.previous_version
            break
    if target is None:
        raise StoreError(f"{alias} has no earlier version to roll back to", where=f"alias {alias}")
    verify_version(project, target, alias=alias)
    set_alias(project, alias, target, action="rollback", reason=reason)
    return current, target


def history(project: Project, alias: str | None = None) -> list[dict[str, Any]]:
    with project.metadata.transaction() as s:
        q = select(AliasHistoryRow).order_by(AliasHistoryRow.id)
        if alias:
            q = q.where(AliasHistoryRow.name == alias)
        return [
            {
                "alias": h.name,
                "version": h.version,
                "previous": h.previous_version,
                "action": h.action,
                "reason": h.reason,
                "at": h.at.isoformat(timespec="seconds"),
            }
            for h in s.scalars(q)
        ]


def run_of(project: Project, run_id: str) -> RunRow:
    with project.metadata.transaction() as s:
        row = s.get(RunRow, run_id)
        if row is None:
            raise NotFoundError(f"no run {run_id}")
        return row


def find_run_by_key(project: Project, run_key: str) -> tuple[RunRow, int] | None:
    """The newest run with this key that produced a model version, with that version."""
    with project.metadata.transaction() as s:
        q = (
            select(RunRow, ModelVersionRow.version)
            .join(ModelVersionRow, ModelVersionRow.run_id == RunRow.id)
            .where(RunRow.run_key == run_key)
            .order_by(ModelVersionRow.version.desc())
            .limit(1)
        )
        hit = s.execute(q).first()
        return (hit[0], hit[1]) if hit else None
