from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_schedules(sender, **kwargs) -> None:
    from actions.schedules import schedules_sync

    schedules_sync()


class ActionsConfig(AppConfig):
    name = "actions"
    verbose_name = "Recommendations and actions"

    def ready(self) -> None:
        from budgetradar import outbox

        # Schedules are declared in code; every migrate upserts them (idempotent).
        post_migrate.connect(_sync_schedules, sender=self)
        outbox.subscribe("job.finished", "actions.services.circuit.on_jobs_finished")
        outbox.subscribe("job.finished", "actions.consumers.dispatch_after_jobs")
        outbox.subscribe("action.parked", "actions.consumers.dispatch_when_due")
