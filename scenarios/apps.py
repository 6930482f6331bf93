from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_schedules(sender, **kwargs) -> None:
    from scenarios.schedules import schedules_sync

    schedules_sync()


class ScenariosConfig(AppConfig):
    name = "scenarios"
    verbose_name = "Scenarios and deployments"

    def ready(self) -> None:
        from budgetradar import outbox

        outbox.subscribe("action.settled", "scenarios.consumers.refresh_deployments")
        outbox.subscribe("action.parked", "scenarios.consumers.refresh_deployments")
        outbox.subscribe("job.started", "scenarios.consumers.mark_deployments_running")
        # The daily pruning of old preflights is declared in code; every migrate upserts it.
        post_migrate.connect(_sync_schedules, sender=self)
