#!/usr/bin/env bash
# `make run`: set up, bootstrap the demo tenant and endpoint, then start every process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DJANGO_DEVELOPMENT=1
# Development only: deliveries may reach the local receiver on loopback.
export WEBHOOK_ALLOWED_NETWORKS="${WEBHOOK_ALLOWED_NETWORKS:-127.0.0.0/8,::1/128}"
# Honcho gives its first process (web) this PORT.
export PORT="${PORT:-8000}"
export PYTHONUNBUFFERED=1
# Development: Flower without authentication, on 127.0.0.1 only (scripts/flower.sh).
unset FLOWER_BASIC_AUTH
# One Prometheus samples directory for web and worker processes; /metrics adds
# them up. Cleared on each start, as prometheus-client's multiprocess mode wants.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ -z "${DEMO_ENDPOINT_SECRET:-}" ]; then
  DEMO_ENDPOINT_SECRET=$(python -c \
    'from subscriptions.secrets import generate_secret; print(generate_secret())')
fi
export DEMO_ENDPOINT_SECRET

bootstrap=$(python manage.py bootstrap_demo --secret "$DEMO_ENDPOINT_SECRET")
field() { sed -n "s/^$1: //p" <<<"$bootstrap"; }
api_key=$(field api_key)
api="http://127.0.0.1:$PORT"

cat <<BANNER

==============================================================================
 Webhooks platform: local demo
------------------------------------------------------------------------------
 Tenant "demo"   tenant_id:   $(field tenant_id)
                 endpoint_id: $(field endpoint_id) -> http://127.0.0.1:9000/
 API key (new on every run, shown once):
   $api_key

 API       $api/api/v1/
 Swagger   $api/api/docs/
 Admin     $api/admin/   (create a login: .venv/bin/python manage.py createsuperuser)
 Flower    http://127.0.0.1:5555/
 Receiver  http://127.0.0.1:9000/   (verifies signatures with the demo secret)

 Send an event (paste into another shell):

curl -sS -X POST $api/api/v1/events -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' -H "Idempotency-Key: demo-\$(date +%s)" -d '{"event_type":"order.created","payload":{"order_id":42}}'

 It answers 202; a moment later the receiver logs a line such as
   receiver.1 | ... POST / id=... type=order.created verified=true status=200
 (verified=true: the signature checked out against the demo secret).
 Stop everything with Ctrl-C.
==============================================================================

BANNER

exec honcho start -f Procfile
