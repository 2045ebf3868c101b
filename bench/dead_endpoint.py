"""The dead endpoint of the isolation drains: known to answer, or known dead."""

import time

from bench.backlog import backlog


def answered_before(world) -> None:
    """Give the dying endpoint a usual duration of 5 ms, as a live one has."""
    from deliveries.flow import gate as flow_gate
    from subscriptions.models import Endpoint

    [endpoint] = Endpoint.objects.filter(
        tenant=world.tenant, event_types=["dead.event"]
    )
    [gate] = flow_gate.enter_many([(endpoint.pk, None)])
    flow_gate.leave_many(
        [flow_gate.Report(endpoint.pk, gate.token, succeeded=True, duration_ms=5)]
    )


def open_dead_circuit(ctx, world) -> None:
    """Let the dead endpoint fail until its circuit opens, as in production.

    It gets as many deliveries as it may have in flight, so that none waits:
    they time out together at the response deadline and open the circuit.
    """
    from django.conf import settings

    from deliveries.flow import gate as flow_gate
    from subscriptions.models import Endpoint

    [endpoint] = Endpoint.objects.filter(
        tenant=world.tenant, event_types=["dead.event"]
    )
    cap = settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT
    backlog(tenant=world.tenant, event_types=["dead.event"], count=cap)
    deadline_s = settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_RESPONSE_TIMEOUT
    with ctx.workers() as workers:
        deadline = time.monotonic() + deadline_s + 60
        while flow_gate.circuit(endpoint.pk)["state"] != "open":
            workers.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the dead endpoint's circuit did not open")
            time.sleep(0.2)
