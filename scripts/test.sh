#!/usr/bin/env bash
# `make test`: set up (pytest-django creates the test_ database), then run pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# Chromium, promtool and docker-compose for the tests that use them.
source scripts/test_tools.sh
export WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8,::1/128
export DJANGO_DEVELOPMENT=1
# Tests read the primary: another connection, the replica alias's too, would not
# see a test's uncommitted rows (tests/replica/ starts a replica of its own).
unset DATABASE_REPLICA_URL
# Keep test runs off the queues and Redis database of a running dev stack.
export WEBHOOK_QUEUE_PREFIX="${WEBHOOK_QUEUE_PREFIX:-test.}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/15}"
# Web and worker processes of the tests share one Prometheus samples directory.
PROMETHEUS_MULTIPROC_DIR="$(mktemp -d -t webhooks-metrics.XXXXXX)"
export PROMETHEUS_MULTIPROC_DIR
trap 'rm -rf "$PROMETHEUS_MULTIPROC_DIR"' EXIT
.venv/bin/pytest "$@"
