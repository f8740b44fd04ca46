"""The socket-token version of users whose tokens were revoked (topics.models)."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='TokenVersion',
            fields=[
                ('user', models.OneToOneField(
                    on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                    related_name='dps_token_version', serialize=False,
                    to=settings.AUTH_USER_MODEL)),
                ('version', models.PositiveIntegerField(default=0)),
            ],
            options={
                'verbose_name': 'socket-token version',
            },
        ),
    ]
