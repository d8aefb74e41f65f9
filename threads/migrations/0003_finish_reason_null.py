# finish_reason is null until the provider gives one; rows written with "" (failed, interrupted) become null.

from django.db import migrations, models


def empty_to_null(apps, schema_editor):
    apps.get_model("threads", "Message").objects.filter(finish_reason="").update(finish_reason=None)


def null_to_empty(apps, schema_editor):
    apps.get_model("threads", "Message").objects.filter(finish_reason=None).update(finish_reason="")


class Migration(migrations.Migration):
    dependencies = [
        ("threads", "0002_coalesce_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="finish_reason",
            field=models.CharField(blank=True, default=None, max_length=32, null=True),
        ),
        migrations.RunPython(empty_to_null, null_to_empty),
    ]
