# Every (provider, model) that threads use becomes a connection and an offered model, and every reply
# records the model that answered it, so threads keep their provider and model as they were.

from django.conf import settings
from django.db import migrations
from django.db.models import CharField, OuterRef, Subquery, Value
from django.db.models.functions import Concat

from core.crypto import SecretBox

KINDS = {"openai", "anthropic", "gemini", "demo"}
PUBLIC_OPENAI_URL = "https://api.openai.com/v1"


def _usable(kind, config):
    # As providers.catalog.env_configured (a migration keeps its own copy of what it relies on).
    if kind == "demo" or config.get("api_key"):
        return True
    return (
        kind == "openai" and str(config.get("base_url", PUBLIC_OPENAI_URL)).rstrip("/") != PUBLIC_OPENAI_URL
    )


def forwards(apps, schema_editor):
    Thread = apps.get_model("threads", "Thread")
    Message = apps.get_model("threads", "Message")
    Connection = apps.get_model("providers", "Connection")
    ModelOffer = apps.get_model("providers", "ModelOffer")
    pairs = Thread.objects.values_list("provider", "model").distinct()
    for provider, model in pairs:
        config = settings.PROVIDERS.get(provider, {})
        kind = str(config.get("kind", provider))
        kind = kind if kind in KINDS else "openai"
        connection, _ = Connection.objects.get_or_create(
            name=provider,
            defaults={
                "kind": kind,
                "base_url": str(config.get("base_url", "")),
                # The environment's key, encrypted (start-up updates it: providers/bootstrap.py).
                "api_key_encrypted": SecretBox(settings.FIELD_ENCRYPTION_KEYS).encrypt(
                    str(config.get("api_key") or "")
                ),
                "enabled": bool(config) and _usable(kind, config),
                "from_env": bool(config),
                "rps": 0.0 if kind == "demo" else 50.0,
            },
        )
        ModelOffer.objects.get_or_create(connection=connection, model=model, defaults={"label": model})
    answered_by = Thread.objects.filter(pk=OuterRef("thread_id")).annotate(
        mid=Concat("provider", Value("/"), "model", output_field=CharField())
    )
    Message.objects.filter(role="assistant", model_id="").update(
        model_id=Subquery(answered_by.values("mid")[:1])
    )


class Migration(migrations.Migration):
    dependencies = [
        ("threads", "0004_models_as_data"),
        ("providers", "0003_connections"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
