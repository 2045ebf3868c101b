"""`/api/v1/event-types`: the calling tenant's event-type catalog."""

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from catalog.api.serializers import EventTypeSerializer
from catalog.selectors import event_type_get, event_type_list
from catalog.services import event_type_create, event_type_delete, event_type_update
from subscriptions.matching import EVENT_TYPE_RE
from webhooks_project.api import TenantScopedMixin
from webhooks_project.openapi import body_errors, errors

NAME_PARAMETER = OpenApiParameter(
    "name",
    {"type": "string", "pattern": EVENT_TYPE_RE.pattern, "maxLength": 255},
    OpenApiParameter.PATH,
    description="The event type's name (dots included).",
)


@extend_schema_view(
    retrieve=extend_schema(parameters=[NAME_PARAMETER]),
    partial_update=extend_schema(parameters=[NAME_PARAMETER]),
    destroy=extend_schema(parameters=[NAME_PARAMETER]),
)
class EventTypeViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """`/api/v1/event-types`: the types the tenant publishes, with their schemas."""

    serializer_class = EventTypeSerializer
    lookup_field = "name"
    # Names hold dots; a slash is never part of one.
    lookup_value_regex = EVENT_TYPE_RE.pattern.strip("^$")

    def get_queryset(self):
        """Only this tenant's event types."""
        return event_type_list(tenant=self.tenant)

    def get_object(self):
        """The tenant's event type, or 404 (also for another tenant's name)."""
        event_type = event_type_get(tenant=self.tenant, name=self.kwargs["name"])
        if event_type is None:
            raise Http404
        return event_type

    @extend_schema(responses={200: EventTypeSerializer(many=True), **errors(404)})
    def list(self, request):
        """The tenant's event types by name, with their schemas and examples."""
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(EventTypeSerializer(page, many=True).data)

    @extend_schema(responses={201: EventTypeSerializer, **body_errors()})
    def create(self, request):
        """Add an event type; its schema binds the payloads published from now on."""
        serializer = EventTypeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        event_type = event_type_create(tenant=self.tenant, **serializer.validated_data)
        return Response(
            EventTypeSerializer(event_type).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(responses={200: EventTypeSerializer, **errors(404)})
    def retrieve(self, request, name=None):
        """One event type."""
        return Response(EventTypeSerializer(self.get_object()).data)

    @extend_schema(responses={200: EventTypeSerializer, **body_errors(404)})
    def partial_update(self, request, name=None):
        """Change the description, schema, example or deprecation (not the name)."""
        event_type = self.get_object()
        serializer = EventTypeSerializer(event_type, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if changes.pop("name", event_type.name) != event_type.name:
            raise ValidationError(
                {"name": ["An event type's name never changes: create another type."]}
            )
        event_type = event_type_update(event_type=event_type, **changes)
        return Response(EventTypeSerializer(event_type).data)

    @extend_schema(responses={204: None, **errors(404)})
    def destroy(self, request, name=None):
        """Remove an event type: its events publish unchecked from now on."""
        event_type_delete(event_type=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
