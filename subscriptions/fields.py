"""Model fields of the subscriptions app."""

from django.db import models

from subscriptions.encryption import decrypt, encrypt, is_encrypted


class EncryptedSecretField(models.TextField):
    """A secret stored encrypted (`subscriptions.encryption`), read as plaintext.

    Each write makes a new token, so the column cannot be filtered on by value.
    """

    def from_db_value(self, value, expression, connection):
        return value if value is None else decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or is_encrypted(value):
            return value
        return encrypt(value)


class JsonPathField(models.TextField):
    """A PostgreSQL `jsonpath`: parsed by the server once, when it is saved.

    Read back as its text (PostgreSQL's normalised form of it).
    """

    def db_type(self, connection):
        return "jsonpath"
