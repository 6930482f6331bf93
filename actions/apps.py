from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_schedules(sender, **kwargs) -> None:
    from actions.schedules import schedules_sync

    schedules_sync()


class ActionsConfig(AppConfig):
    name = "actions"
    verbose_name = "Recommendations and actions"

    def ready(self) -> None:
        # Schedules are declared in code; every migrate upserts them (idempotent).
        post_migrate.connect(_sync_schedules, sender=self)
