from django.apps import AppConfig


class BudgetRadarConfig(AppConfig):
    name = "budgetradar"
    verbose_name = "Tenants, plans and members"

    def ready(self) -> None:
        from budgetradar import lookups  # noqa: F401  (registers ``__in_array``)
