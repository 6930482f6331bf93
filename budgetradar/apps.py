from django.apps import AppConfig


class BudgetRadarConfig(AppConfig):
    name = "budgetradar"
    verbose_name = "Tenants, plans and members"
