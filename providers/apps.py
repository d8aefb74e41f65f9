from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    # Connections and model offers (providers/models.py); the catalog reloads when they change.
    name = "providers"
    verbose_name = "Providers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from providers import catalog

        catalog.connect_signals()
