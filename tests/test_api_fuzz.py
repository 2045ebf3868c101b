"""Schemathesis against the project's own OpenAPI schema, through the WSGI app.

Every operation of `/api/schema/` is called with generated valid and invalid
input under a real tenant's API key. Each answer must be no 5xx, a status code
the schema documents for the operation, and a content type and body that match
the schema. Generated UUIDs in paths are swapped for the tenant's real objects
(an endpoint, an event, a delivery with an attempt, a spare API key), so that
the operations on one object run for real rather than answering 404.

The default run is small and repeatable: `FUZZ_EXAMPLES` (25) per operation,
derandomized. A long, random session (see SECURITY.md for the latest figures):

    FUZZ_EXAMPLES=200 FUZZ_RANDOM=1 bash scripts/test.sh tests/test_api_fuzz.py
"""

import os
import uuid
from collections import Counter

import pytest
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from catalog.services import event_type_create
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.attempts import delivery_run
from tenants.services import api_key_create
from tests.conftest import purge_queues
from tests.factories import make_endpoint, make_event
from webhooks_project.wsgi import application

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ_RANDOM = os.environ.get("FUZZ_RANDOM", "") not in ("", "0")
# Nothing listens there: deliveries fail at once with a recorded attempt.
CLOSED_PORT_URL = "http://127.0.0.1:9/fuzz"

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
schema.config.generation.update(max_examples=FUZZ_EXAMPLES)

statuses: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _fuzz_summary(request):
    """Report the requests made; drop the tasks that published events queued."""
    yield
    purge_queues()
    total = sum(statuses.values())
    by_class = Counter()
    for (_, status), count in statuses.items():
        by_class[f"{status // 100}xx"] += count
    operations = len({label for label, _ in statuses})
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not total:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_sep(
            "-",
            f"api fuzz: {total} requests to {operations} operations, "
            f"{FUZZ_EXAMPLES} examples each, "
            + ", ".join(f"{name}: {count}" for name, count in sorted(by_class.items())),
        )


@pytest.fixture
def fuzz_tenant(issued_key, tenant):
    """The tenant's key header and one real object per kind of path id."""
    endpoint = make_endpoint(tenant=tenant, url=CLOSED_PORT_URL)
    event, [delivery] = make_event(tenant=tenant)
    delivery_run(delivery_id=delivery.pk)
    _, [dead] = make_event(tenant=tenant, event_type="order.dead")
    Delivery.objects.filter(pk=dead.pk).update(
        status=DeliveryStatus.DEAD_LETTER, dead_lettered_at=timezone.now()
    )
    spare_key = api_key_create(tenant=tenant, name="spare").api_key
    event_type_create(
        tenant=tenant,
        name="order.created",
        schema={"type": "object", "properties": {"id": {"type": "string"}}},
        example={"id": "ord_1"},
    )
    return {
        "headers": {"Authorization": f"Bearer {issued_key.key}"},
        "ids": {
            "api-keys": str(spare_key.pk),
            "endpoints": str(endpoint.pk),
            "events": str(event.pk),
            "deliveries": str(delivery.pk),
        },
        "names": {"event-types": "order.created"},
    }


def _aim_at_real_object(case, ids: dict[str, str], names: dict[str, str]) -> None:
    """Swap a generated, well-formed id (or name) for the tenant's object of that
    kind."""
    if "name" in (case.path_parameters or {}):
        if case.meta.generation.mode == GenerationMode.POSITIVE:
            resource = case.path.strip("/").split("/")[2]
            case.path_parameters["name"] = names[resource]
        return
    generated = (case.path_parameters or {}).get("id")
    if generated is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    try:
        uuid.UUID(str(generated))
    except ValueError:
        return
    resource = case.path.strip("/").split("/")[2]
    case.path_parameters["id"] = ids[resource]


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=not FUZZ_RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, fuzz_tenant):
    _aim_at_real_object(case, fuzz_tenant["ids"], fuzz_tenant["names"])
    response = case.call_and_validate(headers=fuzz_tenant["headers"], checks=CHECKS)
    statuses[(case.operation.label, response.status_code)] += 1
