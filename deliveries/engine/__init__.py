"""The delivery engine: how a threads-pool worker runs `deliveries.deliver` tasks.

Every delivery is still one `deliveries.deliver` message on RabbitMQ, acknowledged
only after its attempt is recorded (or it was settled without one). What changes
is how a worker executes them: instead of one Celery task invocation per message,
each doing its own claim, Redis round trips and writes, the messages a worker
receives together go through a pipeline:

1. admit (one thread): one statement claims the whole batch, one Redis round
   trip asks flow control for all of it; postponed and skipped deliveries are
   settled at once;
2. send (the worker's thread pool, `--concurrency` requests in flight): sign and
   POST, nothing else, so a slow or dead receiver holds one thread and nothing
   more;
3. record (one thread): the successes finished since the last write are stored in
   one statement, flow control hears of them in one round trip, then their
   messages are acknowledged.

Batches form by themselves under load (whatever arrived while the previous step
was busy) and are one delivery long when the worker is idle, so nothing waits to
fill a batch. Prefork, solo and green pools run the task body per message as
before (`deliveries.tasks.deliver`), with the same services.
"""
