"""Platform credentials are encrypted at rest, rotate with MultiFernet and never leak."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings

from budgetradar.crypto import rotate_token
from platforms.models import PlatformConnection
from tests.factories import ConnectionFactory

SECRET = "ya29.super-secret-token-7f3a"


def raw_credentials(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM platforms_platformconnection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_credentials_are_ciphertext_in_the_database_row(tenant):
    conn = ConnectionFactory(tenant=tenant, credentials={"access_token": SECRET})
    stored = raw_credentials(conn.pk)
    assert SECRET not in stored
    assert stored.startswith("gAAAA")  # a Fernet token
    assert PlatformConnection.objects.get(pk=conn.pk).credentials == {"access_token": SECRET}


def test_credentials_decrypt_after_key_rotation_and_reencrypt_with_the_new_key(tenant, settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    conn = ConnectionFactory(tenant=tenant, credentials={"access_token": SECRET})
    new_key = Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        assert PlatformConnection.objects.get(pk=conn.pk).credentials["access_token"] == SECRET
        rotated = rotate_token(raw_credentials(conn.pk))
        PlatformConnection.objects.filter(pk=conn.pk).update(credentials=rotated)
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        assert PlatformConnection.objects.get(pk=conn.pk).credentials["access_token"] == SECRET


def test_a_removed_key_fails_loudly_instead_of_returning_garbage(tenant):
    conn = ConnectionFactory(tenant=tenant, credentials={"access_token": SECRET})
    with (
        override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(ImproperlyConfigured, match="cannot be decrypted"),
    ):
        PlatformConnection.objects.get(pk=conn.pk).credentials  # noqa: B018 (decrypted on access)


def test_history_rows_never_hold_credentials(tenant):
    conn = ConnectionFactory(tenant=tenant, credentials={"access_token": SECRET})
    conn.name = "Renamed"
    conn.save()
    history_model = conn.history.model
    assert "credentials" not in {f.name for f in history_model._meta.get_fields()}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {history_model._meta.db_table}")
        assert SECRET not in repr(cursor.fetchall())


def test_config_for_executors_carries_decrypted_credentials_but_repr_hides_them(tenant):
    conn = ConnectionFactory(tenant=tenant, credentials={"access_token": SECRET})
    config = conn.to_config()
    assert config.credentials["access_token"] == SECRET
    assert SECRET not in repr(config)


def test_rows_that_only_join_a_connection_never_decrypt_its_credentials(tenant, settings):
    conn = ConnectionFactory(tenant=tenant, credentials={"access_token": SECRET})
    from tests.factories import EntityFactory

    EntityFactory.create_batch(3, connection=conn)
    with override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        names = [e.connection.name for e in conn.entities.select_related("connection")]
    assert len(names) == 3  # no key could decrypt them, and nothing tried
