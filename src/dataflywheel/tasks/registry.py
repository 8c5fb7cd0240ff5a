"""Tasks by name: ``model.task`` in a config is one of :func:`available_tasks` (or ``auto``).

A task is added by an explicit :func:`register_task` call (duplicates are rejected), as model
builders and data sources are; :func:`get_task` returns the one instance of a name.
"""

from __future__ import annotations

from dataflywheel.errors import ConfigError
from dataflywheel.tasks.base import Task

_TASKS: dict[str, Task] = {}


def register_task(*, name: str, cls: type[Task]) -> Task:
    """Make ``cls`` usable as ``model.task: name``; a name can be registered once."""
    if name in _TASKS or name == "auto":
        owner = type(_TASKS[name]).__module__ if name in _TASKS else "the config"
        raise ValueError(f"task {name!r} is already registered (by {owner})")
    task = cls()
    if getattr(cls, "name", name) != name:
        raise ValueError(f"task class {cls.__name__} is named {cls.name!r}, not {name!r}")
    cls.name = name
    _TASKS[name] = task
    return task


def unregister_task(name: str) -> None:
    """Forget ``name`` (for tests that register a task of their own)."""
    _TASKS.pop(name, None)


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def all_tasks() -> list[Task]:
    return [_TASKS[n] for n in available_tasks()]


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name is a :class:`ConfigError` at ``model.task``."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}", where="model.task",
                          fix=f"use one of {', '.join(available_tasks())}") from None


def task_for_answers(*, has_classes: bool, serving: str = "records") -> Task:
    """The first registered task whose answers have classes (or not), served by ``serving``
    (``records``, or ``generation`` for a logged completion): how a logged answer that does not
    name its model's task is read."""
    for task in _TASKS.values():
        if task.has_classes == has_classes and task.serving == serving:
            return task
    raise ConfigError(f"no registered {serving} task {'with' if has_classes else 'without'} classes")


def infer_task_name(column_type: str) -> str | None:
    """The task a target column of ``column_type`` poses by default, if any registered task
    claims that type (the built-in tasks come first)."""
    for task in _TASKS.values():
        if column_type in task.target_types:
            return task.name
    return None
