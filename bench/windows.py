"""Endpoint windows against none: drains alone and beside a dying endpoint, alternated.

    .venv/bin/python -m bench.windows --windows 0,1000,2000 --rounds 4

Each round drains, for every window size in turn, the isolation scenario's
backlog alone and beside a dying endpoint (`bench.alternated`). The window is
set in this process (the backlog's publisher) and in the workers.
"""

import os
import sys

from bench import alternated


def main(argv=None) -> int:
    """Run the rounds and print the summary."""
    return alternated.run(
        argv,
        prog="python -m bench.windows",
        description=__doc__,
        option="--windows",
        default="0,2000",
        apply=_window,
    )


def _window(size: str) -> None:
    from django.conf import settings

    os.environ["WEBHOOK_ENDPOINT_WINDOW"] = size  # the workers'
    settings.WEBHOOK_ENDPOINT_WINDOW = int(size)  # the backlog's publisher


if __name__ == "__main__":
    sys.exit(main())
