"""Which task trains a model on a dataset: the model's kind, and for a model of several kinds
the data."""

from __future__ import annotations

from typing import Any

from molfold.data.datamodule import data_fields
from molfold.data.graph import FORCES
from molfold.models.registry import model_kinds
from molfold.tasks.base import Task, task_for_kind


def task_for_data(model: str, data: dict[str, Any]) -> type[Task]:
    """The task that trains ``model`` on the ``data`` section's source.

    A model of one kind has one task. A model of several kinds (Equiformer: potential and
    property) takes the first whose task's fields the data gives, a potential first when the
    data has forces (MD17, OC20 S2EF) and a property model first otherwise (QM9 targets, OC20
    IS2RE).
    """
    kinds = model_kinds(model)
    if len(kinds) == 1:
        return task_for_kind(kinds[0])
    fields = set(data_fields(data))
    order = ("potential", "property") if FORCES in fields else ("property", "potential")
    ranked = sorted(kinds, key=lambda k: order.index(k) if k in order else len(order))
    for kind in ranked:
        task = task_for_kind(kind)
        if set(task.required_fields) <= fields:
            return task
    return task_for_kind(ranked[0])  # its field check names what the data lacks
