"""Serializers for API keys."""

from rest_framework import serializers

from tenants.models import ApiKey


class ApiKeySerializer(serializers.ModelSerializer):
    """An API key as listed: never the key itself."""

    class Meta:
        model = ApiKey
        fields = ("id", "name", "prefix", "created_at", "last_used_at")
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    """Input for a new key."""

    name = serializers.CharField(max_length=100, allow_blank=True, required=False)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """A new key, the one time its full value is shown."""

    key = serializers.CharField(read_only=True)

    class Meta(ApiKeySerializer.Meta):
        fields = ("id", "name", "prefix", "key", "created_at")
        read_only_fields = fields
