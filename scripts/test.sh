#!/usr/bin/env bash
# `make test`: set up (pytest-django creates the test_ database), then run pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# The dashboard's browser test drives Debian's Chromium: install it when missing.
# Never fatal: without it that one test is skipped (and says why).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt_get=""
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt_get="env DEBIAN_FRONTEND=noninteractive apt-get"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      apt_get="sudo -n env DEBIAN_FRONTEND=noninteractive apt-get"
    fi
  fi
  if [ -n "$apt_get" ]; then
    echo "Installing chromium and chromium-driver (browser tests)"
    if ! { $apt_get update -qq && $apt_get install -y -qq chromium chromium-driver; } \
      >/dev/null 2>&1; then
      echo "warning: installing chromium failed; the dashboard browser test will be skipped." >&2
    fi
  else
    echo "warning: chromium not found and apt-get not usable here;" \
      "the dashboard browser test will be skipped." >&2
  fi
fi
export WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8,::1/128
export DJANGO_DEVELOPMENT=1
# Keep test runs off the queues and Redis database of a running dev stack.
export WEBHOOK_QUEUE_PREFIX="${WEBHOOK_QUEUE_PREFIX:-test.}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/15}"
# Web and worker processes of the tests share one Prometheus samples directory.
PROMETHEUS_MULTIPROC_DIR="$(mktemp -d -t webhooks-metrics.XXXXXX)"
export PROMETHEUS_MULTIPROC_DIR
trap 'rm -rf "$PROMETHEUS_MULTIPROC_DIR"' EXIT
.venv/bin/pytest "$@"
