"""django-q2 entry points of the planning loop: thin, idempotent, ids only."""

from __future__ import annotations

from planning.services.ingestion import ingestion_run
from planning.services.loop import loop_tick
from planning.services.rollout import shadow_compare_due
from planning.services.runs import planner_run_process


def tick_task() -> None:
    loop_tick()


def planner_run_task(run_pk: int) -> None:
    planner_run_process(run_pk)


def ingestion_task(ingestion_pk: int) -> None:
    ingestion = ingestion_run(ingestion_pk=ingestion_pk)
    if ingestion is not None and ingestion.status == "succeeded":
        shadow_compare_due(connection_id=ingestion.connection_id)
