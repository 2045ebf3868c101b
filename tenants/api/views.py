"""API keys of the calling tenant: list, create, revoke."""

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from tenants.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
)
from tenants.selectors import api_key_list
from tenants.services import api_key_create, api_key_revoke
from webhooks_project.api import TenantScopedMixin
from webhooks_project.openapi import body_errors, errors


class ApiKeyViewSet(
    TenantScopedMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """`/api/v1/api-keys`: the tenant's keys."""

    serializer_class = ApiKeySerializer

    @extend_schema(responses={200: ApiKeySerializer(many=True), **errors(404)})
    def list(self, request, *args, **kwargs):
        """The tenant's active keys, newest first (never the keys themselves)."""
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        """Only this tenant's active keys."""
        return api_key_list(tenant=self.tenant)

    @extend_schema(
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer, **body_errors()},
    )
    def create(self, request):
        """Create a key; the response is the only time it is shown."""
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = api_key_create(
            tenant=self.tenant, name=serializer.validated_data.get("name", "")
        )
        issued.api_key.key = issued.key
        return Response(
            ApiKeyCreatedSerializer(issued.api_key).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(responses={204: None, **errors(404)})
    def destroy(self, request, pk=None):
        """Revoke a key at once."""
        api_key = self.get_queryset().filter(pk=pk).first()
        if api_key is None:
            raise Http404
        api_key_revoke(api_key=api_key)
        return Response(status=status.HTTP_204_NO_CONTENT)
