"""Endpoints of the calling tenant: CRUD, secret and rotation."""

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from deliveries.api.serializers import ReplayResultSerializer
from deliveries.services.endpoint_health import endpoint_change, endpoint_replay_missed
from subscriptions.api.serializers import (
    ConsumerFilterSerializer,
    EndpointCreatedSerializer,
    EndpointSerializer,
    SecretSerializer,
)
from subscriptions.selectors import endpoint_get, endpoint_list
from subscriptions.services import (
    endpoint_create,
    endpoint_delete,
    endpoint_rotate_secret,
)
from webhooks_project.api import TenantScopedMixin
from webhooks_project.openapi import body_errors, errors


class EndpointViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """`/api/v1/endpoints`: where the tenant's events are delivered."""

    serializer_class = EndpointSerializer

    def get_queryset(self):
        """Only this tenant's endpoints."""
        return endpoint_list(tenant=self.tenant)

    def get_object(self):
        """The tenant's endpoint, or 404 (also for another tenant's id)."""
        endpoint = endpoint_get(tenant=self.tenant, endpoint_id=self.kwargs["pk"])
        if endpoint is None:
            raise Http404
        return endpoint

    @extend_schema(
        parameters=[ConsumerFilterSerializer],
        responses={200: EndpointSerializer(many=True), **body_errors(404)},
    )
    def list(self, request):
        """The tenant's endpoints, newest first (one consumer's with `?consumer=`)."""
        filters = ConsumerFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        endpoints = endpoint_list(
            tenant=self.tenant, consumer=filters.validated_data.get("consumer")
        )
        page = self.paginate_queryset(endpoints)
        return self.get_paginated_response(EndpointSerializer(page, many=True).data)

    @extend_schema(responses={201: EndpointCreatedSerializer, **body_errors()})
    def create(self, request):
        """Create an endpoint; its secret is generated unless given."""
        serializer = EndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_create(tenant=self.tenant, **serializer.validated_data)
        return Response(
            EndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(responses={200: EndpointSerializer, **errors(404)})
    def retrieve(self, request, pk=None):
        """One endpoint."""
        return Response(EndpointSerializer(self.get_object()).data)

    @extend_schema(responses={200: EndpointSerializer, **body_errors(404)})
    def partial_update(self, request, pk=None):
        """Change some fields of an endpoint."""
        endpoint = self.get_object()
        serializer = EndpointSerializer(endpoint, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        new_secret = changes.pop("secret", None)
        endpoint = endpoint_change(endpoint=endpoint, changes=changes)
        if new_secret:
            endpoint_rotate_secret(endpoint=endpoint, secret=new_secret)
        return Response(EndpointSerializer(self.get_object()).data)

    @extend_schema(responses={200: EndpointSerializer, **body_errors(404)})
    def update(self, request, pk=None):
        """Replace an endpoint's writable fields (PUT)."""
        endpoint = self.get_object()
        serializer = EndpointSerializer(endpoint, data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        changes.pop("secret", None)
        endpoint = endpoint_change(endpoint=endpoint, changes=changes)
        return Response(EndpointSerializer(self.get_object()).data)

    @extend_schema(responses={204: None, **errors(404)})
    def destroy(self, request, pk=None):
        """Delete an endpoint and its deliveries."""
        endpoint_delete(endpoint=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={202: ReplayResultSerializer, **errors(404)})
    @action(detail=True, methods=["post"], url_path="replay-missed")
    def replay_missed(self, request, pk=None):
        """Replay the deliveries dead-lettered while the endpoint was disabled."""
        result = endpoint_replay_missed(endpoint=self.get_object())
        return Response(result.as_response(), status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: SecretSerializer, **errors(404)})
    @action(detail=True, methods=["get"], url_path="secret")
    def secret(self, request, pk=None):
        """The endpoint's current signing secret."""
        return Response({"secret": self.get_object().secret})

    @extend_schema(
        request=SecretSerializer,
        responses={200: SecretSerializer, **body_errors(404)},
    )
    @action(detail=True, methods=["post"], url_path="secret/rotate")
    def rotate_secret(self, request, pk=None):
        """Rotate the secret; the old one keeps signing for the grace period."""
        endpoint = self.get_object()
        serializer = SecretSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        new_secret = endpoint_rotate_secret(
            endpoint=endpoint, secret=serializer.validated_data.get("secret")
        )
        return Response({"secret": new_secret})
