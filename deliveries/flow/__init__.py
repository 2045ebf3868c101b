"""Flow control: the gate in Redis, the refusals read from it, endpoint isolation.

- `gate`: before an attempt, may it go (in-flight cap, rate, circuit breaker,
  receiver's pause, hanging endpoints); after it, how it went. The one writer of
  "this endpoint refuses every delivery until T".
- `refusals`: the one reader of that fact (and of which endpoints are isolated),
  cached per process for REFUSALS_LIFETIME.
- `isolation`: queues of their own in RabbitMQ for endpoints in trouble and busy
  ones (the publisher's side), and `worker_queues`: which of them a worker reads.
"""
