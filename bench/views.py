"""A trivial authenticated DRF view: the web stack's ceiling for the ingest bench.

Routed only when WEBHOOK_BENCH_VIEWS=1 (off by default): `GET|POST /bench/noop`.
It runs the same middleware, API key authentication (one query) and JSON parsing
as `POST /api/v1/events`, then answers a constant.
"""

from rest_framework.response import Response
from rest_framework.views import APIView


class BenchNoopView(APIView):
    """Authenticate, parse the body, answer `{"ok": true}`."""

    # As event ingestion, whose own bucket it leaves out: no API bucket either.
    throttle_classes = ()

    def get(self, request):
        """Answer a constant."""
        return Response({"ok": True})

    def post(self, request):
        """Parse the JSON body, then answer a constant."""
        return Response({"ok": True, "keys": len(request.data)})
