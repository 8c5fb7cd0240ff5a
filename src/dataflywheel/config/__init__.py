"""The one config model: pydantic classes mirroring flywheel.yaml, one module per group of sections.

Every class forbids unknown keys, so a typo is an error rather than a silently ignored
setting. :func:`load_config` turns pydantic's errors into one line that names the YAML path
and the fix, e.g. ``data.split.valid: must be between 0 and 1 (got 1.5)``.

- :mod:`.section`: the base class and the shared device validator;
- :mod:`.data`: ``data`` (source, features, processing, split) and ``validation``;
- :mod:`.training`: ``model``, ``train`` and ``evaluate``;
- :mod:`.serving`: ``serve``, ``monitor`` and ``retrain``;
- :mod:`.privacy`: ``privacy``;
- :mod:`.flywheel`: :class:`FlywheelConfig` (the whole file) and ``store``;
- :mod:`.loading`: reading the YAML and describing its errors.

Import from here (``from dataflywheel.config import TrainConfig``); the modules are how the
package is cut up, not part of its interface. None imports torch.
"""

from dataflywheel.config.data import (
    AnomalyKind,
    AnomalyPolicy,
    DataConfig,
    FeatureConfig,
    FeatureType,
    MissingConfig,
    ProcessingConfig,
    SourceConfig,
    SplitConfig,
)
from dataflywheel.config.flywheel import FlywheelConfig, StoreConfig
from dataflywheel.config.loading import (
    check_model_params,
    config_from_dict,
    describe_error,
    load_config,
    model_params_problem,
    yaml_path,
)
from dataflywheel.config.privacy import DEFAULT_PII_KINDS, PiiKind, PrivacyConfig
from dataflywheel.config.section import Section, check_device
from dataflywheel.config.serving import (
    ONNX_BACKENDS,
    AuthConfig,
    Backend,
    Guard,
    MonitorConfig,
    RetrainConfig,
    ServeConfig,
)
from dataflywheel.config.training import (
    EarlyStoppingConfig,
    EvaluateConfig,
    ModelConfig,
    ScheduleConfig,
    TrainConfig,
    resolve_early_stopping,
)

__all__ = [
    "DEFAULT_PII_KINDS",
    "ONNX_BACKENDS",
    "AnomalyKind",
    "AnomalyPolicy",
    "AuthConfig",
    "Backend",
    "DataConfig",
    "EarlyStoppingConfig",
    "EvaluateConfig",
    "FeatureConfig",
    "FeatureType",
    "FlywheelConfig",
    "Guard",
    "MissingConfig",
    "ModelConfig",
    "MonitorConfig",
    "PiiKind",
    "PrivacyConfig",
    "ProcessingConfig",
    "RetrainConfig",
    "ScheduleConfig",
    "Section",
    "ServeConfig",
    "SourceConfig",
    "SplitConfig",
    "StoreConfig",
    "TrainConfig",
    "check_device",
    "check_model_params",
    "config_from_dict",
    "describe_error",
    "load_config",
    "model_params_problem",
    "resolve_early_stopping",
    "yaml_path",
]
