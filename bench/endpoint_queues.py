"""Endpoint queues against one shared queue: drains alone and beside a dying endpoint.

    .venv/bin/python -m bench.endpoint_queues --rounds 4

Each round drains, for each variant in turn (`shared`: WEBHOOK_ENDPOINT_QUEUES
off; `isolated`: on, the default: queues for endpoints found refusing or full,
and busy ones), the isolation scenario's backlog alone and beside a dying endpoint
(`bench.alternated`), each drain's line giving the messages its endpoints'
queues still held at its end. The settings are applied in this process (the
backlog's publisher) and in the workers; after each drain the endpoint queues
and their announcements are dropped, so that no drain's workers read the
queues of the drains before.
"""

import os
import sys

from bench import alternated


def main(argv=None) -> int:
    """Run the rounds and print the summary."""
    return alternated.run(
        argv,
        prog="python -m bench.endpoint_queues",
        description=__doc__,
        option="--variants",
        default="shared,isolated",
        apply=_variant,
        after=_drop_endpoint_queues,
    )


def _variant(variant: str) -> None:
    from django.conf import settings

    if variant not in ("shared", "isolated"):
        raise SystemExit(f"unknown variant {variant!r}: shared or isolated")
    on = variant == "isolated"
    os.environ["WEBHOOK_ENDPOINT_QUEUES"] = "1" if on else "0"  # the workers'
    settings.WEBHOOK_ENDPOINT_QUEUES = on  # the backlog's publisher


def _drop_endpoint_queues(variant: str) -> str:
    """Delete every announced endpoint queue; what each still held, as a note."""
    from deliveries.flow import isolation

    left = sorted(isolation.delete().values())
    return f", left in endpoint queues: {left}" if left else ""


if __name__ == "__main__":
    sys.exit(main())
