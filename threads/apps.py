from django.apps import AppConfig


class ThreadsConfig(AppConfig):
    name = "threads"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from threads import signals  # noqa: F401  (connects the receivers)
