"""Invitations keep only a hash of their link's key: the stored keys are hashed in place, so links
already sent keep working (accounts.invitations looks a presented key up by its hash)."""

import hashlib

from django.db import migrations


def hash_keys(apps, schema_editor):
    invitation = apps.get_model("accounts", "Invitation")
    rows = invitation.objects.using(schema_editor.connection.alias)
    for pk, key in rows.values_list("pk", "key_hash"):
        rows.filter(pk=pk).update(key_hash=hashlib.sha256(key.encode()).hexdigest())


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_session_names_its_user")]

    operations = [
        migrations.RenameField(model_name="invitation", old_name="key", new_name="key_hash"),
        # A hash cannot be turned back into its key: going back leaves the old links unusable.
        migrations.RunPython(hash_keys, migrations.RunPython.noop),
    ]
