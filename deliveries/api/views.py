"""Events, deliveries and the dead-letter queue of the calling tenant."""

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from deliveries import selectors
from deliveries.api import batch_serializers as bs
from deliveries.api import serializers as s
from deliveries.models import Delivery
from deliveries.services.ingest import IdempotencyConflict, event_ingest
from deliveries.services.ingest_batch import BatchItem, events_ingest_batch
from deliveries.services.replay import dead_letters_filter, dead_letters_replay
from deliveries.services.scheduling import DeliveryExpired, delivery_requeue
from tenants.throttling import (
    rate_limit_headers,
    tenant_check_rate,
    tenant_return_tokens,
)
from webhooks_project.api import TenantScopedMixin
from webhooks_project.openapi import (
    IDEMPOTENCY_HEADER,
    body_errors,
    detail_response,
    errors,
    idempotency_header,
    rate_limit_response_headers,
)
from webhooks_project.pagination import CursorPagination, PageNumberPagination
from webhooks_project.replica import read_lag_tolerant


class Conflict(APIException):
    """409: the idempotency key was used with a different body."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_conflict"


class ExpiredConflict(APIException):
    """409: a retry of an expired delivery without `force`."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "delivery_expired"


def _filters(serializer_class, params) -> dict:
    serializer = serializer_class(data=params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _page_response(view, queryset, serializer_class) -> Response:
    """One page of `queryset`, read from the replica if there is one.

    A list tolerates a second of replication lag; one object by id does not (a
    client reads it right after creating it), so `retrieve` stays on the primary.
    """

    def read(db: str) -> Response:
        page = view.paginate_queryset(queryset.using(db))
        return view.get_paginated_response(serializer_class(page, many=True).data)

    return read_lag_tolerant(read)


class EventViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """`/api/v1/events`: publish and browse events."""

    pagination_class = CursorPagination
    serializer_class = s.EventSerializer

    def get_throttles(self):
        """Publishing takes from the tenant's ingestion bucket, not the API's."""
        publishing = self.action in ("create", "batch")
        return [] if publishing else super().get_throttles()

    @extend_schema(
        request=s.EventCreateSerializer,
        parameters=[idempotency_header(), *rate_limit_response_headers(200, 202, 429)],
        responses={
            202: s.EventAcceptedSerializer,
            200: s.EventAcceptedSerializer,
            **body_errors(409, 429),
        },
    )
    def create(self, request):
        """Accept an event and fan it out to every matching endpoint.

        When the type's entry in the catalog has a schema, the payload must follow
        it: a 400 lists where it does not (`{"payload": ["$.customer.id: ..."]}`).
        """
        bucket = tenant_check_rate(tenant=self.tenant)
        serializer = s.EventCreateSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = self._idempotency_key(request, data.get("event_id"))
        try:
            result = event_ingest(
                tenant=self.tenant,
                event_type=data["event_type"],
                payload=data["payload"],
                idempotency_key=key,
                consumer=data.get("consumer"),
                expires_at=data.get("expires_at"),
                ordering_key=data.get("ordering_key"),
            )
        except IdempotencyConflict as exc:
            raise Conflict(str(exc)) from exc
        return Response(
            s.EventAcceptedSerializer(result).data,
            status=status.HTTP_202_ACCEPTED if result.created else status.HTTP_200_OK,
            headers=rate_limit_headers(bucket),
        )

    @extend_schema(
        request=bs.EventBatchSerializer,
        parameters=rate_limit_response_headers(202, 429),
        responses={
            202: bs.EventBatchAcceptedSerializer,
            **body_errors(409, 429),
            413: detail_response("The request body is over WEBHOOK_MAX_BATCH_BYTES."),
        },
    )
    @action(detail=False, methods=["post"])
    def batch(self, request):
        """Accept 1-100 events, all or none, each fanned out as a single one.

        An invalid item is a 400 naming its index, an `event_id` reused with
        another body a 409, too few rate-limit tokens for every item a 429;
        none of them stores anything. Items give their idempotency key as
        `event_id`: an `Idempotency-Key` header is refused (400).
        """
        if IDEMPOTENCY_HEADER in request.headers:
            raise ValidationError(
                {
                    IDEMPOTENCY_HEADER: [
                        "Not used by batches: give each item an event_id."
                    ]
                }
            )
        serializer = bs.EventBatchSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        items = [
            BatchItem(
                event_type=item["event_type"],
                payload=item["payload"],
                consumer=item.get("consumer"),
                idempotency_key=item.get("event_id"),
                expires_at=item.get("expires_at"),
                ordering_key=item.get("ordering_key"),
            )
            for item in serializer.validated_data["events"]
        ]
        bucket = tenant_check_rate(tenant=self.tenant, events=len(items))
        try:
            results = events_ingest_batch(tenant=self.tenant, items=items)
        except Exception as exc:
            # Nothing was stored: the tokens go back to the bucket.
            if bucket is not None:
                tenant_return_tokens(tenant=self.tenant, events=len(items))
            if isinstance(exc, IdempotencyConflict):
                raise Conflict(str(exc)) from exc
            raise
        return Response(
            bs.EventBatchAcceptedSerializer({"results": results}).data,
            status=status.HTTP_202_ACCEPTED,
            headers=rate_limit_headers(bucket),
        )

    @staticmethod
    def _idempotency_key(request, body_key: str | None) -> str | None:
        header_key = request.headers.get(IDEMPOTENCY_HEADER)
        # NUL: no PostgreSQL text column can hold it.
        if header_key is not None and (
            not 1 <= len(header_key) <= 255 or "\x00" in header_key
        ):
            raise ValidationError(
                {IDEMPOTENCY_HEADER: ["Must be 1-255 characters long, without NUL."]}
            )
        if header_key and body_key and header_key != body_key:
            raise ValidationError(
                {"event_id": [f"Differs from the {IDEMPOTENCY_HEADER} header."]}
            )
        return header_key or body_key or None

    @extend_schema(
        parameters=[s.EventFilterSerializer],
        responses={200: s.EventSerializer(many=True), **errors(404)},
    )
    def list(self, request):
        """The tenant's events, newest first."""
        filters = _filters(s.EventFilterSerializer, request.query_params)
        events = selectors.event_list(tenant=self.tenant, **filters)
        return _page_response(self, events, s.EventSerializer)

    @extend_schema(responses={200: s.EventDetailSerializer, **errors(404)})
    def retrieve(self, request, pk=None):
        """One event with a summary of its deliveries."""
        event = selectors.event_get(tenant=self.tenant, event_id=pk)
        if event is None:
            raise Http404
        event.delivery_statuses = selectors.event_delivery_summary(event=event)
        event.delivery_count = sum(event.delivery_statuses.values())
        return Response(s.EventDetailSerializer(event).data)


class DeliveryViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """`/api/v1/deliveries`: each event and endpoint pair and its attempts."""

    pagination_class = CursorPagination
    serializer_class = s.DeliverySerializer

    def get_object(self):
        """The tenant's delivery, or 404."""
        delivery = selectors.delivery_get(
            tenant=self.tenant, delivery_id=self.kwargs["pk"]
        )
        if delivery is None:
            raise Http404
        return delivery

    @extend_schema(
        parameters=[s.DeliveryFilterSerializer],
        responses={200: s.DeliverySerializer(many=True), **errors(404)},
    )
    def list(self, request):
        """The tenant's deliveries, newest first."""
        filters = _filters(s.DeliveryFilterSerializer, request.query_params)
        deliveries = selectors.delivery_list(
            tenant=self.tenant,
            status=filters.get("status"),
            endpoint_id=filters.get("endpoint"),
            event_id=filters.get("event"),
            consumer=filters.get("consumer"),
        )
        return _page_response(self, deliveries, s.DeliverySerializer)

    @extend_schema(responses={200: s.DeliverySerializer, **errors(404)})
    def retrieve(self, request, pk=None):
        """One delivery."""
        return Response(s.DeliverySerializer(self.get_object()).data)

    @extend_schema(responses={200: s.AttemptSerializer(many=True), **errors(404)})
    @action(detail=True, methods=["get"], pagination_class=PageNumberPagination)
    def attempts(self, request, pk=None):
        """Every attempt of a delivery, oldest first."""
        attempts = selectors.delivery_attempts(delivery=self.get_object())
        return _page_response(self, attempts, s.AttemptSerializer)

    @extend_schema(
        request=s.RetrySerializer,
        responses={
            202: s.DeliverySerializer,
            **body_errors(404),
            409: detail_response("The delivery expired: retry it with force."),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue the delivery again now, whatever its status.

        An expired delivery answers 409 unless `{"force": true}` is given.
        """
        force = _filters(s.RetrySerializer, request.data)["force"]
        try:
            delivery = delivery_requeue(delivery=self.get_object(), force=force)
        except Delivery.DoesNotExist:  # purged (retention) while this waited for it
            raise Http404 from None
        except DeliveryExpired as exc:
            raise ExpiredConflict(str(exc)) from exc
        return Response(
            s.DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED
        )


class DeadLetterViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """`/api/v1/dead-letters`: deliveries that exhausted their retries."""

    pagination_class = CursorPagination
    serializer_class = s.DeliverySerializer

    @extend_schema(
        parameters=[s.DeadLetterFilterSerializer],
        responses={200: s.DeliverySerializer(many=True), **errors(404)},
    )
    def list(self, request):
        """Dead-lettered deliveries, newest first."""
        filters = _filters(s.DeadLetterFilterSerializer, request.query_params)
        dead = dead_letters_filter(
            queryset=selectors.dead_letter_list(tenant=self.tenant),
            endpoint_id=filters.get("endpoint"),
            since=filters.get("since"),
            until=filters.get("until"),
        )
        return _page_response(self, dead, s.DeliverySerializer)

    @extend_schema(
        request=s.ReplaySerializer,
        responses={202: s.ReplayResultSerializer, **body_errors()},
    )
    @action(detail=False, methods=["post"])
    def replay(self, request):
        """Queue matching dead letters again, each with a fresh round of retries."""
        serializer = s.ReplaySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        dead = dead_letters_filter(
            queryset=selectors.dead_letter_list(tenant=self.tenant),
            endpoint_id=data.get("endpoint"),
            since=data.get("since"),
            until=data.get("until"),
            ids=data.get("ids"),
        )
        result = dead_letters_replay(queryset=dead)
        return Response(result.as_response(), status=status.HTTP_202_ACCEPTED)
