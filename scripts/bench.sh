#!/usr/bin/env bash
# `make bench`: set up (venv, requirements, services check), then the benchmark
# harness. Options pass through: `make bench ARGS="--quick"` or
# `bash scripts/bench.sh --scenarios ingest,delivery --runs 5`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh >/dev/null

if ! command -v wrk >/dev/null 2>&1; then
  source scripts/apt.sh
  echo "Installing wrk (the ingest load generator)"
  apt_install wrk ||
    echo "warning: wrk not installed (apt-get install -y wrk); ingest, growth and resources need it." >&2
fi
exec .venv/bin/python -m bench "$@"
