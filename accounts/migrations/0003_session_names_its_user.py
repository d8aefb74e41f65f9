"""Sessions move to accounts_session (SESSION_ENGINE = accounts.sessions), each row naming its user.
The live sessions of django_session are copied over, their user read from their data, so nobody is
logged out by the deploy and every one of them can be ended by user. django_session is left as it was
(an older release rolled back to still finds its sessions); empty it once the deploy has settled."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

BATCH = 1000


def copy_sessions(apps, schema_editor):
    from django.contrib.sessions.backends.db import SessionStore as OldStore
    from django.utils import timezone

    from accounts.sessions import session_user_id

    old = apps.get_model("sessions", "Session")
    new = apps.get_model("accounts", "Session")
    decoder = OldStore()  # decode() checks the signature (SECRET_KEY): a bad row names no user
    rows = []
    alive = old.objects.using(schema_editor.connection.alias).filter(expire_date__gt=timezone.now())
    for row in alive.iterator(chunk_size=BATCH):
        user_id = session_user_id(decoder.decode(row.session_data))
        rows.append(
            new(
                session_key=row.session_key,
                session_data=row.session_data,
                expire_date=row.expire_date,
                user_id=user_id,
            )
        )
        if len(rows) >= BATCH:
            new.objects.bulk_create(rows, ignore_conflicts=True)
            rows = []
    new.objects.bulk_create(rows, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_allauth_audit_invitations"),
        ("sessions", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Session",
            fields=[
                (
                    "session_key",
                    models.CharField(
                        max_length=40, primary_key=True, serialize=False, verbose_name="session key"
                    ),
                ),
                ("session_data", models.TextField(verbose_name="session data")),
                ("expire_date", models.DateTimeField(db_index=True, verbose_name="expire date")),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"verbose_name": "session", "verbose_name_plural": "sessions", "abstract": False},
        ),
        migrations.RunPython(copy_sessions, migrations.RunPython.noop),
    ]
