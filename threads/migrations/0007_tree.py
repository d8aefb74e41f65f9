# The conversation tree (#18): every thread remembers its current leaf; messages written before the tree
# (a user message without a parent) are chained in order, each to the message before it.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def chain(apps, schema_editor):
    Thread = apps.get_model("threads", "Thread")
    Message = apps.get_model("threads", "Message")
    for thread_id in Thread.objects.values_list("id", flat=True).iterator():
        previous = None
        for pk, parent_id in (
            Message.objects.filter(thread_id=thread_id).order_by("id").values_list("id", "parent_id")
        ):
            if parent_id is None and previous is not None:
                Message.objects.filter(pk=pk).update(parent_id=previous)
            previous = pk
        if previous is not None:
            Thread.objects.filter(pk=thread_id).update(current_leaf_id=previous)


class Migration(migrations.Migration):
    dependencies = [
        ("threads", "0006_chat_preferences"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="thread",
            name="archived",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="thread",
            name="current_leaf",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="threads.message",
            ),
        ),
        migrations.AddIndex(
            model_name="thread",
            index=models.Index(
                fields=["owner", "archived", "-updated_at", "-id"], name="thread_owner_listed"
            ),
        ),
        migrations.RunPython(chain, migrations.RunPython.noop),
    ]
