from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers, flags and metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from providers.prometheus import cache_cursor_wrappers

        cache_cursor_wrappers()
