from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_schedules(sender, **kwargs) -> None:
    from observability.schedules import schedules_sync

    schedules_sync()


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Watch, alerts and metrics"

    def ready(self) -> None:
        from budgetradar import outbox
        from observability.consumers import SUBSCRIPTIONS

        for topic, handler in SUBSCRIPTIONS.items():
            outbox.subscribe(topic, handler)
        # Schedules are declared in code; every migrate upserts them (idempotent).
        post_migrate.connect(_sync_schedules, sender=self)
