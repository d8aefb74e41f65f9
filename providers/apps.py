from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    # No models of its own since FeatureFlag moved to ops; kept installed so its migration history applies.
    name = "providers"
    verbose_name = "Providers"
    default_auto_field = "django.db.models.BigAutoField"
