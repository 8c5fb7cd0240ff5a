"""Metadata (SQLAlchemy) and artifacts (a local folder), opened together as a :class:`Project`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dataflywheel.store.artifacts import ArtifactStore
from dataflywheel.store.metadata import MetadataStore


@dataclass
class Project:
    metadata: MetadataStore
    artifacts: ArtifactStore
    root: Path

    @classmethod
    def open(cls, root: Path, url: str | None = None) -> Project:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        url = url or f"sqlite:///{(root / 'flywheel.db').resolve()}"
        return cls(MetadataStore(url), ArtifactStore(root / "artifacts"), root)

    def close(self) -> None:
        self.metadata.close()
