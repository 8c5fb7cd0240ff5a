"""flywheel.yaml to a :class:`FlywheelConfig`, and pydantic's errors to one line.

A pydantic error becomes ``YAML.PATH: what is wrong (got X)``, e.g. ``data.split.valid: must be
between 0 and 1 (got 1.5)``, raised as a :class:`~dataflywheel.errors.ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dataflywheel.config.flywheel import FlywheelConfig
from dataflywheel.config.training import ModelConfig
from dataflywheel.errors import ConfigError


def yaml_path(loc: Any) -> str:
    """A pydantic error location as a YAML path: ``("model", "params", "hidden", 1)`` ->
    ``model.params.hidden[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out


def describe_error(err: Any) -> str:
    """One pydantic error as ``YAML.PATH: what is wrong (got X)``."""
    loc = yaml_path(err["loc"])
    prefix = f"{loc}: " if loc else ""
    msg: str = err["msg"]
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        return f"{prefix}unknown key; remove it or check its spelling"
    if kind == "missing":
        return f"{prefix}required; add it"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        parent, _, field = loc.rpartition(".")
        bounds = _BOUNDS.get(field)
        if bounds:
            return f"{prefix}must be {bounds} (got {got})"
        return f"{prefix}{msg.lower()} (got {got})"
    if kind == "literal_error":
        return f"{prefix}must be one of {ctx.get('expected')} (got {got!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if got is not None and not isinstance(got, (dict, list)) and "got" not in msg:
        return f"{prefix}{msg} (got {got!r})"
    return f"{prefix}{msg}"


_BOUNDS = {"train": "between 0 and 1", "valid": "between 0 and 1", "test": "between 0 and 1"}


def config_from_dict(raw: Any, *, base_dir: Path | None = None, where: str = "flywheel.yaml") -> FlywheelConfig:
    if not isinstance(raw, dict):
        raise ConfigError("must be a YAML mapping with at least data.source and data.target", where=where)
    try:
        cfg = FlywheelConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = describe_error(errors[0])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(first + more, where=where) from None
    if base_dir is not None:
        cfg.base_dir = base_dir
    return cfg


def check_model_params(cfg: FlywheelConfig, where: str = "flywheel.yaml") -> None:
    """Raise :class:`ConfigError` naming the YAML path of a wrong ``model.params`` key or value.
    Not part of loading a config: it imports the model registry (torch), which commands that
    only read the store (``models list``, ``data show``) do not need; ``flywheel validate``,
    ``run`` and ``train`` call it before reading any data."""
    problem = model_params_problem(cfg.model)
    if problem:
        raise ConfigError(problem, where=where)


def model_params_problem(model: ModelConfig) -> str | None:
    """What is wrong with ``model.params`` for its registered model type (the first problem,
    as one line naming the YAML path), or None. Empty params need no check (and no import of
    the model registry, which imports torch); an unregistered type is reported where the
    model is built."""
    if not model.params:
        return None
    from dataflywheel.models.registry import available_models, params_class

    cls = params_class(model.type) if model.type in available_models() else None
    if cls is None:
        return None
    try:
        cls.model_validate(model.params)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        line = describe_error({**first, "loc": ("model", "params", *first["loc"])})
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
            line += f" (model type {model.type!r} takes {', '.join(cls.choices())})"
        return line + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return None


def load_config(path: str | Path) -> FlywheelConfig:
    """Read and validate flywheel.yaml; raise :class:`ConfigError` naming the bad field."""
    import yaml

    p = Path(path)
    if p.is_dir():
        p = p / "flywheel.yaml"
    if not p.is_file():
        raise ConfigError("file not found", where=str(p), fix="run `flywheel init --data FILE --target COLUMN`")
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 100,000-feature file in a second
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"invalid YAML{line}: {problem}", where=str(p), fix="fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", where=str(p)) from None
    return config_from_dict(raw, base_dir=p.resolve().parent, where=str(p))
