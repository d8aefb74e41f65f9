from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Usage and budgets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing.dashboard import budget_hits_section
        from ops.views import DASHBOARD_SECTIONS

        if budget_hits_section not in DASHBOARD_SECTIONS:
            DASHBOARD_SECTIONS.append(budget_hits_section)
