from django.apps import AppConfig


class ScenariosConfig(AppConfig):
    name = "scenarios"
    verbose_name = "Scenarios and deployments"

    def ready(self) -> None:
        from budgetradar import outbox

        outbox.subscribe("action.settled", "scenarios.consumers.refresh_deployments")
        outbox.subscribe("action.parked", "scenarios.consumers.refresh_deployments")
        outbox.subscribe("job.started", "scenarios.consumers.mark_deployments_running")
