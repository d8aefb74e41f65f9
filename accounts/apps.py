from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts import audit, signals  # noqa: F401  (connects the receivers)

        audit.connect_allauth_receivers()
        signals.connect_allauth_receivers()
