"""The whole of flywheel.yaml: every section, the project's folder and the ``store`` section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import Field

from dataflywheel.config.data import AnomalyPolicy, DataConfig
from dataflywheel.config.privacy import PrivacyConfig
from dataflywheel.config.section import Section
from dataflywheel.config.serving import MonitorConfig, RetrainConfig, ServeConfig
from dataflywheel.config.training import EvaluateConfig, ModelConfig, TrainConfig


class StoreConfig(Section):
    root: str = ".flywheel"
    """Folder for the embedded store (SQLite file and artifacts), relative to flywheel.yaml."""
    url: str | None = None
    """SQLAlchemy URL of the metadata store; default ``sqlite:///<root>/flywheel.db``."""


class FlywheelConfig(Section):
    project: str = "flywheel"
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    validation: AnomalyPolicy = Field(default_factory=AnomalyPolicy)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    base_dir: Path = Field(default=Path("."), exclude=True)
    """Folder of flywheel.yaml; relative paths resolve against it (not a YAML key)."""

    def resolve(self, path: str | Path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    def section_hash(self, *sections: str) -> str:
        """Content hash of the named sections, for caching and lineage."""
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
