"""The publisher's frame encoder writes the bytes py-amqp writes for a message."""

import uuid

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer

from deliveries.amqp_frames import publish_frames
from deliveries.publisher import Message, Publisher
from webhooks_project.celery import app


class _Connection:
    frame_max = 131072
    bytes_sent = 0


class _Socket:
    """Stands for py-amqp's transport: keeps what its frame writer writes."""

    def __init__(self):
        self.written = b""

    def write(self, data):
        self.written += bytes(data)


def amqp_bytes(*, channel, exchange, routing_key, mandatory, task_id, headers, body):
    """What py-amqp's Channel.basic_publish hands the socket for this message."""
    socket = _Socket()
    message = amqp.Message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=headers,
        delivery_mode=2,
        correlation_id=task_id,
    )
    args = (0, exchange, routing_key, mandatory, False)
    method_args = amqp.serialization.dumps("Bssbb", args)
    frame_writer(_Connection(), socket)(
        1, channel, spec.Basic.Publish, method_args, message
    )
    return socket.written


@pytest.mark.parametrize("countdown", [0, 30])
@pytest.mark.parametrize("mandatory", [False, True])
def test_a_task_message_is_encoded_as_py_amqp_does(countdown, mandatory):
    built = Publisher(app)._message(
        Message(str(uuid.uuid4()), str(uuid.uuid4()), countdown=countdown, retries=3)
    )
    task_id, headers, body, _ = built
    message = {
        "channel": 7,
        "exchange": "celery_delayed_27" if countdown else "",
        "routing_key": "test.webhooks.deliveries",
        "mandatory": mandatory,
    }
    ours = publish_frames(
        **message,
        frame_max=_Connection.frame_max,
        correlation_id=task_id,
        headers=headers,
        body=body,
    )
    assert ours == amqp_bytes(**message, task_id=task_id, headers=headers, body=body)


def test_unicode_and_large_integers_in_headers():
    headers = {"argsrepr": "('é…',)", "retries": 2**31 - 1, "neg": -5}
    ours = publish_frames(
        channel=1,
        frame_max=131072,
        exchange="x",
        routing_key="q",
        mandatory=False,
        correlation_id="c",
        headers=headers,
        body=b"[]",
    )
    theirs = amqp_bytes(
        channel=1,
        exchange="x",
        routing_key="q",
        mandatory=False,
        task_id="c",
        headers=headers,
        body=b"[]",
    )
    assert ours == theirs


@pytest.mark.parametrize(
    "change",
    [
        {"headers": {"retries": 2**40}},
        {"headers": {"flag": True}},
        {"headers": {"eta": None}},
        {"body": b"x" * 200_000},
        {"routing_key": "q" * 300},
    ],
)
def test_other_shapes_are_refused_not_misencoded(change):
    message = {
        "channel": 1,
        "frame_max": 131072,
        "exchange": "",
        "routing_key": "q",
        "mandatory": False,
        "correlation_id": "c",
        "headers": {},
        "body": b"[]",
    } | change
    with pytest.raises(ValueError):
        publish_frames(**message)
