"""Endpoint queues against one shared queue: drains alone and beside a dying endpoint.

    .venv/bin/python -m bench.endpoint_queues --rounds 4

Each round drains, for each variant in turn (`shared`: WEBHOOK_ENDPOINT_QUEUES
off; `isolated`: queues for endpoints found refusing or full; `queues`: `all`;
`queuesN`: `all` with a prefetch of N per endpoint queue), the
isolation scenario's backlog alone and beside a dying endpoint
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
        default="shared,isolated,queues",
        apply=_variant,
        after=_drop_endpoint_queues,
    )


def _variant(variant: str) -> None:
    from django.conf import settings

    mode = {"shared": "off", "isolated": "isolated"}.get(variant, "all")
    os.environ["WEBHOOK_ENDPOINT_QUEUES"] = mode  # the workers'
    # queuesN: a prefetch of N per endpoint queue (queues: 0, Celery's);
    # isolated: the default
    if mode == "all":
        prefetch = variant.removeprefix("queues") or "0"
        os.environ["WEBHOOK_ENDPOINT_QUEUE_PREFETCH"] = prefetch
    else:
        os.environ.pop("WEBHOOK_ENDPOINT_QUEUE_PREFETCH", None)
    settings.WEBHOOK_ENDPOINT_QUEUES = mode  # the backlog's publisher


def _drop_endpoint_queues(variant: str) -> str:
    """Delete every announced endpoint queue; what each still held, as a note."""
    from deliveries import endpoint_queues

    left = sorted(endpoint_queues.delete().values())
    return f", left in endpoint queues: {left}" if left else ""


if __name__ == "__main__":
    sys.exit(main())
