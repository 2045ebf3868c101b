"""Small rendering helpers shared by the deliveries admin pages."""

import json

from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from deliveries.services.replay import ReplayResult

EMPTY = "-"


def pretty_json(value) -> SafeString | str:
    """`value` as indented JSON in a <pre> block (escaped)."""
    if value is None:
        return EMPTY
    return _json_pre(value)


def pretty_body(body: str) -> SafeString | str:
    """A response body in a <pre> block, indented when it is JSON."""
    if not body:
        return EMPTY
    try:
        return _json_pre(json.loads(body))
    except ValueError:
        return format_html("<pre>{}</pre>", body)


def _json_pre(value) -> SafeString:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html("<pre>{}</pre>", text)


def change_link(obj, text=None) -> SafeString:
    """A link to `obj`'s admin change page."""
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj.pk if text is None else text)


def replay_message(result: ReplayResult) -> str:
    """What a replay did, in words, with what it left for another run."""
    message = ngettext(
        "Replayed %d delivery.", "Replayed %d deliveries.", result.replayed
    ) % (result.replayed,)
    if result.remaining:
        message += f" {result.remaining} more match: replay again for the next batch."
    if result.skipped:
        message += f" {result.skipped} skipped: their endpoint is inactive."
    return message
