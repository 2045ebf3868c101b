"""`/api/v1/portal-sessions`: links into the consumer portal."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.response import Response

from portal.api.serializers import (
    PortalSessionCreateSerializer,
    PortalSessionSerializer,
)
from portal.services import portal_session_create
from webhooks_project.api import TenantScopedMixin
from webhooks_project.openapi import body_errors


class PortalSessionViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """Issue a link that opens one consumer's portal in a browser."""

    serializer_class = PortalSessionCreateSerializer

    @extend_schema(responses={201: PortalSessionSerializer, **body_errors()})
    def create(self, request):
        """Issue a single-use portal link for a consumer of the calling tenant."""
        serializer = PortalSessionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = portal_session_create(tenant=self.tenant, **serializer.validated_data)
        url = request.build_absolute_uri(reverse("portal:enter", args=[issued.token]))
        data = {"session": issued.session, "url": url}
        return Response(
            PortalSessionSerializer(data).data, status=status.HTTP_201_CREATED
        )
