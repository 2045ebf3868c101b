#!/usr/bin/env bash
# Start Flower. Outside development it requires basic auth: FLOWER_BASIC_AUTH=user:password
# (several: user1:pw1,user2:pw2). Flower reads that variable itself, so the password
# never appears on a command line (`ps`). Development (DJANGO_DEVELOPMENT=1) without
# it serves Flower unauthenticated, and then on loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

address="${FLOWER_ADDRESS:-127.0.0.1}"
port="${FLOWER_PORT:-5555}"

is_development() {
  case "$(tr '[:upper:]' '[:lower:]' <<<"${DJANGO_DEVELOPMENT:-0}")" in
    1 | true | yes | on) return 0 ;;
    *) return 1 ;;
  esac
}

if [ -n "${FLOWER_BASIC_AUTH:-}" ]; then
  IFS=, read -ra credentials <<<"$FLOWER_BASIC_AUTH"
  for credential in "${credentials[@]}"; do
    if [[ ! "$credential" =~ ^[^:]+:.+$ ]]; then
      echo "flower: FLOWER_BASIC_AUTH must be user:password (several: user1:pw1,user2:pw2)." >&2
      exit 2
    fi
  done
  export FLOWER_BASIC_AUTH
elif is_development; then
  case "$address" in
    127.0.0.1 | localhost | ::1) ;;
    *)
      echo "flower: refusing to serve Flower without authentication on $address;" \
        "set FLOWER_BASIC_AUTH=user:password or FLOWER_ADDRESS=127.0.0.1." >&2
      exit 2
      ;;
  esac
else
  echo "flower: FLOWER_BASIC_AUTH is not set. Flower needs basic auth outside" \
    "development: set FLOWER_BASIC_AUTH=user:password (several: user1:pw1,user2:pw2)," \
    "or DJANGO_DEVELOPMENT=1 for an unauthenticated Flower on 127.0.0.1." >&2
  exit 2
fi

exec celery -A webhooks_project flower --address="$address" --port="$port"
