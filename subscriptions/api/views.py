"""Endpoints of the calling tenant: CRUD, secret and rotation, test events,
recovery and statistics."""

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from deliveries.api import endpoint_serializers as es
from deliveries.api.serializers import ReplayResultSerializer
from deliveries.services.endpoint_health import endpoint_change, endpoint_replay_missed
from deliveries.services.recovery import endpoint_recover
from deliveries.services.test_events import endpoint_send_test
from deliveries.stats import endpoint_stats
from subscriptions.api.serializers import (
    ConsumerFilterSerializer,
    EndpointCreatedSerializer,
    EndpointSerializer,
    SecretSerializer,
)
from subscriptions.selectors import endpoint_get, endpoint_list
from subscriptions.services import (
    EndpointInactive,
    endpoint_create,
    endpoint_delete,
    endpoint_rotate_secret,
)
from tenants.throttling import rate_limit_headers, tenant_check_rate
from webhooks_project.api import TenantScopedMixin
from webhooks_project.openapi import (
    body_errors,
    detail_response,
    errors,
    rate_limit_response_headers,
)

INACTIVE = {409: detail_response("The endpoint is inactive: enable it first.")}


class Inactive(APIException):
    """409: the endpoint is disabled."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "endpoint_inactive"


class EndpointViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """`/api/v1/endpoints`: where the tenant's events are delivered."""

    serializer_class = EndpointSerializer

    def get_queryset(self):
        """Only this tenant's endpoints."""
        return endpoint_list(tenant=self.tenant)

    def get_throttles(self):
        """A test event takes from the tenant's ingestion bucket, not the API's."""
        return [] if self.action == "send_test" else super().get_throttles()

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

    @extend_schema(
        request=es.TestEventSerializer,
        parameters=rate_limit_response_headers(202, 429),
        responses={
            202: es.TestEventResultSerializer,
            **body_errors(404, 429),
            **INACTIVE,
        },
    )
    @action(detail=True, methods=["post"], url_path="test")
    def send_test(self, request, pk=None):
        """Send a test event to this endpoint only, whatever its event types
        and payload filter.

        Recorded as an ordinary event and delivery; it counts against the
        tenant's event rate limit.
        """
        endpoint = self.get_object()
        bucket = tenant_check_rate(tenant=self.tenant)
        serializer = es.TestEventSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result = endpoint_send_test(endpoint=endpoint, **serializer.validated_data)
        except EndpointInactive as exc:
            raise Inactive(str(exc)) from exc
        return Response(
            result.as_response(),
            status=status.HTTP_202_ACCEPTED,
            headers=rate_limit_headers(bucket),
        )

    @extend_schema(
        request=es.RecoverSerializer,
        responses={202: es.RecoverResultSerializer, **body_errors(404), **INACTIVE},
    )
    @action(detail=True, methods=["post"])
    def recover(self, request, pk=None):
        """Queue again what the endpoint missed of the events of `[since, until)`.

        Its dead letters of those events are replayed, and the tenant's
        matching events that never had a delivery to it get one. Calling it
        again creates nothing new.
        """
        endpoint = self.get_object()
        serializer = es.RecoverSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result = endpoint_recover(endpoint=endpoint, **serializer.validated_data)
        except EndpointInactive as exc:
            raise Inactive(str(exc)) from exc
        return Response(result.as_response(), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[es.StatsQuerySerializer],
        responses={200: es.EndpointStatsSerializer, **errors(404)},
    )
    @action(detail=True, methods=["get"])
    def stats(self, request, pk=None):
        """Delivery statistics of a window (default: the last 24 hours, at most
        31 days), with an hourly (over 72 hours: daily) series."""
        endpoint = self.get_object()
        serializer = es.StatsQuerySerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        stats = endpoint_stats(endpoint=endpoint, **serializer.validated_data)
        return Response(es.EndpointStatsSerializer(stats).data)
