"""A trivial authenticated DRF view: the web stack's ceiling for the ingest bench.

Routed only in development (`DJANGO_DEVELOPMENT=1`, as the benchmark's stack
runs): `GET|POST /bench/noop`, left out of the API schema.
It runs the same middleware, API key authentication (one query) and JSON parsing
as `POST /api/v1/events`, then answers a constant.
"""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView


@extend_schema(exclude=True)
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
