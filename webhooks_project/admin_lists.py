"""Admin changelists for tables of millions of rows: estimated counts, indexed sorts.

Shared by the admins of deliveries and events (`LargeTableAdminMixin`), with the
bound on what one admin action handles (`action_rows`).
"""

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Unfiltered lists count their rows exactly up to this many; above it they show
# PostgreSQL's estimate instead of running COUNT(*) over the table.
EXACT_COUNT_LIMIT = 100_000
# Most rows one admin action handles: "select all" may pick millions.
ACTION_MAX_ROWS = 1000
MORE_SELECTED = (
    f" Only the first {ACTION_MAX_ROWS} selected were handled: run it again for "
    "the rest."
)

# PostgreSQL's own row estimate, scaled to the table's current size the way the
# planner does it (reltuples is -1 before the first ANALYZE).
_ESTIMATE_SQL = """
    SELECT CASE
        WHEN reltuples < 0 THEN NULL
        WHEN relpages = 0 THEN reltuples
        ELSE reltuples / relpages
             * (pg_relation_size(oid) / current_setting('block_size')::int)
    END
    FROM pg_class WHERE oid = %s::regclass
"""


def table_row_estimate(table: str, *, using: str = "default") -> int | None:
    """PostgreSQL's estimate of the rows in `table`, or None before any ANALYZE."""
    with connections[using].cursor() as cursor:
        cursor.execute(_ESTIMATE_SQL, [connections[using].ops.quote_name(table)])
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def action_rows(queryset) -> tuple[list, bool]:
    """The first ACTION_MAX_ROWS rows of an action's selection; True if more."""
    rows = list(queryset[: ACTION_MAX_ROWS + 1])
    return rows[:ACTION_MAX_ROWS], len(rows) > ACTION_MAX_ROWS


class EstimatedCountPaginator(Paginator):
    """Counts an unfiltered list from PostgreSQL's statistics once it is big.

    A changelist without filter or search would otherwise run `SELECT COUNT(*)`
    over the whole table on every page view. Up to
    `EXACT_COUNT_LIMIT` estimated rows, and for every filtered list
    (which an index narrows), the count stays exact.
    """

    @cached_property
    def count(self) -> int:
        """The estimate for a big unfiltered list, else the exact count."""
        queryset = self.object_list
        if not queryset.query.where:
            estimate = table_row_estimate(
                queryset.model._meta.db_table, using=queryset.db
            )
            if estimate is not None and estimate >= EXACT_COUNT_LIMIT:
                return estimate
        return super().count


class IndexedSortChangeList(ChangeList):
    """A changelist that sorts only by `sortable_by`, even from a forged `?o=`.

    Django hides the other column headers' sort links but still honours their
    indexes in the query string; a sort no index serves reads the whole table.
    """

    def get_ordering_field(self, field_name):
        """The column's ordering field, or None when it may not be sorted on."""
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)


class LargeTableAdminMixin:
    """No whole-table COUNT(*), no per-choice counts, sorting by `sortable_by` only."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    def get_changelist(self, request, **kwargs):
        """The changelist class that ignores sorts outside `sortable_by`."""
        return IndexedSortChangeList

    def get_actions(self, request):
        """No "delete selected": across all matching rows it deletes millions."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions
