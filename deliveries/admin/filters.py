"""Sidebar filters of the dead-letter queue, each served by an index.

None of them reads the whole queue to find its choices (no DISTINCT over the
dead letters): the tenants are probed one by one on the dead-letter index, the
endpoints are those of the chosen tenant, reasons and ages are fixed choices.
The consumer filter of endpoints and events is a box to type the id in.
"""

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Exists, OuterRef
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.endpoint_health import DISABLED_REASON_PREFIX
from deliveries.services.scheduling import RETRIES_EXHAUSTED_REASON
from subscriptions.consumers import consumer_error
from subscriptions.models import Endpoint
from tenants.admin import is_uuid
from tenants.models import Tenant

TENANT_PARAMETER = "tenant__id__exact"
ENDPOINT_PARAMETER = "endpoint__id__exact"


def tenants_with_dead_letters():
    """Tenants with dead letters, by name: one probe of the dead-letter index each."""
    dead = Delivery.objects.filter(
        tenant=OuterRef("pk"), status=DeliveryStatus.DEAD_LETTER
    )
    return Tenant.objects.filter(Exists(dead)).order_by("name")


class ChosenListFilter(admin.SimpleListFilter):
    """A filter that applies its chosen value even when it offers no choices.

    Django leaves a filter without choices out of the query, so a chosen
    tenant or endpoint would be ignored (and "replay all matching" would replay
    more than the list shows) once it had nothing left to offer.
    """

    field_name: str

    def has_output(self) -> bool:
        """Take part whenever a value is chosen."""
        return self.value() is not None or super().has_output()

    def queryset(self, request, queryset):
        """The rows of the chosen id; a malformed id is the list's error page."""
        if self.value() is None:
            return queryset
        if not is_uuid(self.value()):
            raise IncorrectLookupParameters(f"{self.title}: not an id")
        return queryset.filter(**{self.field_name: self.value()})


class TenantListFilter(ChosenListFilter):
    """Tenants that have dead letters, by name."""

    title = "tenant"
    parameter_name = TENANT_PARAMETER
    field_name = "tenant_id"

    def lookups(self, request, model_admin):
        """The tenants with dead letters."""
        tenants = tenants_with_dead_letters().values_list("pk", "name")
        return [(str(pk), name) for pk, name in tenants]


class EndpointListFilter(ChosenListFilter):
    """The chosen tenant's endpoints (at most WEBHOOK_MAX_ENDPOINTS_PER_TENANT)."""

    title = "endpoint"
    parameter_name = ENDPOINT_PARAMETER
    field_name = "endpoint_id"

    def lookups(self, request, model_admin):
        """Offered once a tenant is chosen; a chosen endpoint is always listed."""
        tenant = request.GET.get(TENANT_PARAMETER, "")
        chosen = request.GET.get(self.parameter_name, "")
        if is_uuid(tenant):
            endpoints = Endpoint.objects.filter(tenant_id=tenant)
        elif is_uuid(chosen):
            endpoints = Endpoint.objects.filter(pk=chosen)
        else:
            return []
        return [
            (str(pk), url)
            for pk, url in endpoints.order_by("url").values_list("pk", "url")
        ]


class ReasonListFilter(admin.SimpleListFilter):
    """Why they were dead-lettered: every attempt failed, or the endpoint was off."""

    title = "reason"
    parameter_name = "reason"

    def lookups(self, request, model_admin):
        """The two kinds of reason the workers write."""
        return [
            ("retries", "Retries exhausted"),
            ("disabled", "Endpoint disabled"),
        ]

    def queryset(self, request, queryset):
        """Dead letters of the chosen kind."""
        if self.value() == "retries":
            return queryset.filter(dead_letter_reason=RETRIES_EXHAUSTED_REASON)
        if self.value() == "disabled":
            return queryset.filter(
                dead_letter_reason__startswith=DISABLED_REASON_PREFIX
            )
        return queryset


# Age choices: (parameter value, label, age bound, whether younger or older).
AGES = (
    ("1h", "Under an hour", timedelta(hours=1), True),
    ("1d", "Under a day", timedelta(days=1), True),
    ("7d", "Under a week", timedelta(days=7), True),
    ("old", "A week or older", timedelta(days=7), False),
)


class AgeListFilter(admin.SimpleListFilter):
    """How long ago deliveries were dead-lettered."""

    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        """Relative ages, on the dead-letter date's index."""
        return [(value, label) for value, label, _, _ in AGES]

    def queryset(self, request, queryset):
        """Dead letters younger, or older, than the chosen age."""
        for value, _, age, younger in AGES:
            if self.value() == value:
                since = timezone.now() - age
                if younger:
                    return queryset.filter(dead_lettered_at__gte=since)
                return queryset.filter(dead_lettered_at__lt=since)
        return queryset


class ConsumerListFilter(admin.SimpleListFilter):
    """One consumer's rows, typed in a box: listing the consumers would read
    DISTINCT over the whole table. Served by the (tenant, consumer) indexes
    once a tenant is chosen, else by a scan that stops at a page of matches."""

    title = "consumer"
    parameter_name = "consumer"
    template = "admin/text_input_filter.html"

    def lookups(self, request, model_admin):
        """None: the consumer is typed, not chosen from a list."""
        return ()

    def has_output(self) -> bool:
        """The box is always shown."""
        return True

    def queryset(self, request, queryset):
        """The rows of the typed consumer; an impossible id is the list's error."""
        if not self.value():
            return queryset
        if consumer_error(self.value()):
            raise IncorrectLookupParameters(f"{self.title}: not a consumer id")
        return queryset.filter(consumer=self.value())

    def choices(self, changelist):
        """One box, with the list's other parameters kept as hidden inputs."""
        yield {
            "parameter_name": self.parameter_name,
            "value": self.value() or "",
            "hidden": [
                (name, value)
                for name, value in changelist.params.items()
                if name != self.parameter_name
            ],
        }
