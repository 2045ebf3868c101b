#!/usr/bin/env bash
# `make bench`: set up (venv, requirements, services check), then the benchmark
# harness. Options pass through: `make bench ARGS="--quick"` or
# `bash scripts/bench.sh --scenarios ingest,delivery --runs 5`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh >/dev/null

if ! command -v wrk >/dev/null 2>&1; then
  apt_get=""
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt_get="env DEBIAN_FRONTEND=noninteractive apt-get"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      apt_get="sudo -n env DEBIAN_FRONTEND=noninteractive apt-get"
    fi
  fi
  if [ -n "$apt_get" ]; then
    echo "Installing wrk (the ingest load generator)"
    $apt_get install -y -qq wrk >/dev/null 2>&1 \
      || { $apt_get update -qq && $apt_get install -y -qq wrk; } >/dev/null 2>&1 \
      || echo "warning: installing wrk failed; ingest, growth and resources need it." >&2
  else
    echo "warning: wrk not found (apt-get install -y wrk)." >&2
  fi
fi
exec .venv/bin/python -m bench "$@"
