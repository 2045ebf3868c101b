"""The migrations describe the models: no model change is left without one."""

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_have_no_changes_missing_a_migration():
    # `--check` exits non-zero when makemigrations would write a migration
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
