"""Django admin for tenants and their API keys (keys are issued and revoked only).

Also holds `UUIDSearchMixin`, shared by the other apps' admins: a search term that
is a UUID is matched exactly (an indexed lookup) instead of by a full-table scan.
"""

import uuid

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.translation import ngettext

from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, api_key_revoke
from webhooks_project.admin_lists import MORE_SELECTED, action_rows

ADMIN_KEY_NAME = "created in admin"


def is_uuid(term: str) -> bool:
    """Whether `term` is a UUID."""
    try:
        uuid.UUID(term)
    except ValueError:
        return False
    return True


class UUIDSearchMixin:
    """Admin search where a UUID term is an exact match on `uuid_search_fields`.

    Any other term goes to `search_fields` the usual way; with no `search_fields`
    it matches nothing (ids are never searched with a scanning `icontains`).
    """

    uuid_search_fields: tuple[str, ...] = ("pk",)

    def get_search_fields(self, request):
        """The text search fields, or the UUID ones so the search box still shows."""
        return self.search_fields or self.uuid_search_fields

    def get_search_results(self, request, queryset, search_term):
        """Match a UUID exactly on the UUID fields, anything else on the text ones."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            value = uuid.UUID(term)
        except ValueError:
            if not self.search_fields:
                return queryset.none(), False
            return super().get_search_results(request, queryset, search_term)
        query = Q.create(
            [(name, value) for name in self.uuid_search_fields], connector=Q.OR
        )
        return queryset.filter(query), False


class ApiKeyInline(admin.TabularInline):
    """A tenant's API keys, read-only: new keys come from the tenant action."""

    model = ApiKey
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        """Keys are never added by hand (their secret must be shown once)."""
        return False


@admin.register(Tenant)
class TenantAdmin(UUIDSearchMixin, admin.ModelAdmin):
    """Tenants, with their keys inline and an action that issues a new key."""

    list_display = (
        "name",
        "id",
        "rate_limit",
        "retention_days",
        "is_active",
        "created_at",
    )
    list_filter = ("is_active",)
    search_fields = ("name",)
    search_help_text = "Tenant name, or a full tenant id."
    fields = ("id", "name", "rate_limit", "retention_days", "is_active", "created_at")
    readonly_fields = ("id", "created_at")
    inlines = (ApiKeyInline,)
    actions = ("create_api_key",)

    def save_model(self, request, obj, form, change):
        """Write only the form's fields: `catalog_version` is bumped by catalog
        writes, and saving the row as loaded could undo one made meanwhile."""
        if change:
            obj.save(update_fields=[*form.changed_data])
        else:
            obj.save()

    @admin.action(description="Create an API key", permissions=["create_key"])
    def create_api_key(self, request, queryset):
        """Issue one key per selected tenant and show each full key once."""
        name = f"{ADMIN_KEY_NAME} by {request.user.get_username()}"[:100]
        tenants, more = action_rows(queryset)
        for tenant in tenants:
            try:
                issued = api_key_create(tenant=tenant, name=name)
            except ValidationError as exc:
                messages.error(request, f"{tenant.name}: {' '.join(exc.messages)}")
                continue
            messages.success(
                request,
                f"New API key for {tenant.name}: {issued.key} "
                "(copy it now: it is never shown again).",
            )
        if more:
            messages.warning(request, MORE_SELECTED.strip())

    def has_delete_permission(self, request, obj=None):
        """A tenant's events, deliveries and attempts may be millions: deleting
        them in one request is unbounded work. Deactivate the tenant instead."""
        return False

    def has_create_key_permission(self, request):
        """Issuing keys needs the permission to add API keys."""
        return request.user.has_perm("tenants.add_apikey")


@admin.register(ApiKey)
class ApiKeyAdmin(UUIDSearchMixin, admin.ModelAdmin):
    """API keys, view-only (the hash is never shown), with a revoke action."""

    list_display = (
        "prefix",
        "name",
        "tenant",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_select_related = ("tenant",)
    search_fields = ("prefix", "name", "tenant__name")
    search_help_text = "Key prefix, key name, tenant name, or a full key id."
    uuid_search_fields = ("pk", "tenant_id")
    fields = (
        "id",
        "tenant",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ("revoke_keys",)

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        """Revoke every selected key that is still active."""
        api_keys, more = action_rows(queryset.filter(revoked_at__isnull=True))
        for api_key in api_keys:
            api_key_revoke(api_key=api_key)
        revoked = len(api_keys)
        self.message_user(
            request,
            ngettext("Revoked %d key.", "Revoked %d keys.", revoked) % revoked
            + (MORE_SELECTED if more else ""),
            messages.SUCCESS,
        )

    def has_revoke_permission(self, request):
        """Revoking needs the permission to change API keys."""
        return request.user.has_perm("tenants.change_apikey")

    def has_add_permission(self, request):
        """Keys are issued from the tenant action, never typed in."""
        return False

    def has_change_permission(self, request, obj=None):
        """Keys are never edited; revocation is an action."""
        return False
