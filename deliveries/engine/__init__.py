"""The delivery engine: how a threads-pool worker runs `deliveries.deliver` tasks.

Every delivery is still one `deliveries.deliver` message on RabbitMQ, acknowledged
only after its attempt is recorded (or it was settled without one). What changes
is how a worker executes them: instead of one Celery task invocation per message,
each doing its own claim, Redis round trips and writes, the messages a worker
receives together go through a pipeline, one module a stage:

- `strategy`: Celery's handler for the task's messages, batching them per turn of
  the consumer's event loop, and the worker step that drains the engine on stop;
- `engine`: the engine's threads and queues; `inbox`: what the admit thread takes
  in (jobs, wake-ups, recoveries);
- `admit`: one statement claims a batch, one Redis round trip asks the gate;
- `lot` and `refused`: where refused deliveries wait (a moment in the lot, or
  postponed), and the pausing of a refusing endpoint's queue;
- `send`: sign, check the destination, hand the request to the sender's event loop;
- `record`: the gate hears of each answer at once, PostgreSQL stores them in batches;
- `settle`: short retries through the broker, acknowledgements in bursts.

Batches form by themselves under load (whatever arrived while the previous step
was busy) and are one delivery long when the worker is idle, so nothing waits to
fill a batch. Prefork, solo and green pools run the task body per message
(`deliveries.tasks.deliver`), with the same services.
"""
