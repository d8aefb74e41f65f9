"""Connections (one upstream model API each) and the models they offer, edited by staff in admin.

A thread names a model as "<connection>/<model>" (`ModelOffer.model_id`). A connection's API key is
stored encrypted (core/crypto.py under FIELD_ENCRYPTION_KEY) and never shown again.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MinValueValidator, RegexValidator, URLValidator
from django.db import models

from core.crypto import SecretBox

KINDS = [
    ("openai", "OpenAI-compatible (OpenAI, vLLM, Ollama, llama.cpp…)"),
    ("anthropic", "Anthropic Messages API"),
    ("gemini", "Google Gemini API"),
    ("demo", "Built-in demo model"),
]


def secret_box() -> SecretBox:
    return SecretBox(settings.FIELD_ENCRYPTION_KEYS)


class Connection(models.Model):
    # A slug: it is the first half of every model id, so it may not contain "/".
    name = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9_-]*\Z", "Lower-case letters, digits, '-' and '_'.")],
    )
    kind = models.CharField(max_length=16, choices=KINDS)
    # A CharField with URL validation: the form's URLField would guess a scheme for a bare host.
    base_url = models.CharField(
        max_length=300, blank=True, default="", validators=[URLValidator(schemes=["http", "https"])]
    )
    # Fernet token of the API key (never the key itself).
    api_key_encrypted = models.TextField(blank=True, default="", editable=False)
    enabled = models.BooleanField(default=True)
    # Timeouts in seconds; empty = the deployment's PROVIDER_*_TIMEOUT_S.
    connect_timeout_s = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.1)])
    first_byte_timeout_s = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.1)])
    idle_timeout_s = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.1)])
    total_timeout_s = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.1)])
    # Pacer: requests per second sustained (0 = unlimited) and burst. Connections naming the same
    # bucket (e.g. two connections to one upstream account) share one; empty = the connection's name.
    rps = models.FloatField(default=50.0, validators=[MinValueValidator(0.0)])
    burst = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    bucket = models.CharField(max_length=32, blank=True, default="")
    # Set when the environment (OPENAI_*, ANTHROPIC_*, DEMO_*) wrote it: each start-up updates it again.
    from_env = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=[k for k, _ in KINDS]), name="connection_kind_valid"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        """The plain key (raises core.crypto.InvalidToken if FIELD_ENCRYPTION_KEY cannot open it)."""
        return secret_box().decrypt(self.api_key_encrypted)

    def set_api_key(self, plain: str) -> None:
        self.api_key_encrypted = secret_box().encrypt(plain)

    @property
    def pacer_bucket(self) -> str:
        return self.bucket or self.name


class ModelOffer(models.Model):
    """One model of a connection, and who may use it (everyone, or members of `groups`)."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="offers")
    # The upstream's own name for it (may contain "/", e.g. "meta-llama/Llama-3.1-8B").
    model = models.CharField(max_length=128)
    label = models.CharField(max_length=100, blank=True, default="")
    # Ticked by staff: only offered models appear in pickers and may be used.
    offered = models.BooleanField(default=True)
    # The model new threads get when they name none (the first default the caller may use).
    is_default = models.BooleanField(default=False)
    everyone = models.BooleanField(default=True, help_text="Offered to every user; else only to the groups.")
    groups = models.ManyToManyField(Group, blank=True, related_name="model_offers")
    context_tokens = models.PositiveIntegerField(null=True, blank=True)
    # USD per million tokens (the usage records' cost).
    price_input_usd_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    price_output_usd_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    position = models.PositiveIntegerField(default=0, help_text="Order in the pickers (smallest first).")

    class Meta:
        ordering = ["position", "connection__name", "model"]
        constraints = [models.UniqueConstraint(fields=["connection", "model"], name="offer_one_per_model")]

    def __str__(self) -> str:
        return self.model_id

    @property
    def model_id(self) -> str:
        return f"{self.connection.name}/{self.model}"
