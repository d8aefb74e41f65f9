from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations: flags and metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ops.prometheus import cache_cursor_wrappers

        cache_cursor_wrappers()
