"""Learning tasks as objects (see :mod:`dataflywheel.tasks.base`), registered by name.

The built-in tasks (binary, multiclass, regression, generation) are registered here, each by one
explicit :func:`register_task` call; a task added elsewhere registers itself the same way before a
config names it.
"""

from __future__ import annotations

from dataflywheel.tasks.base import Decoded, Metric, Plot, Task
from dataflywheel.tasks.binary import BinaryTask
from dataflywheel.tasks.classes import ClassTask
from dataflywheel.tasks.generation import GenerationTask
from dataflywheel.tasks.multiclass import MulticlassTask
from dataflywheel.tasks.registry import (
    all_tasks,
    available_tasks,
    get_task,
    infer_task_name,
    register_task,
    task_for_answers,
    unregister_task,
)
from dataflywheel.tasks.regression import RegressionTask

__all__ = [
    "ClassTask",
    "Decoded",
    "GenerationTask",
    "Metric",
    "Plot",
    "Task",
    "all_tasks",
    "available_tasks",
    "get_task",
    "infer_task_name",
    "register_task",
    "task_for_answers",
    "unregister_task",
]

register_task(name="binary", cls=BinaryTask)
register_task(name="multiclass", cls=MulticlassTask)
register_task(name="regression", cls=RegressionTask)
register_task(name="generation", cls=GenerationTask)
