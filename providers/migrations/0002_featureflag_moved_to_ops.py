# FeatureFlag now belongs to the ops app (ops/migrations/0001_initial.py): drop it from this app's state only.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("providers", "0001_initial"),
        ("ops", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="FeatureFlag")],
            database_operations=[],
        ),
    ]
