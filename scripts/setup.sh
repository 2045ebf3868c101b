#!/usr/bin/env bash
# Prepare a checkout: virtualenv, requirements, services check, database, migrations,
# static files (collected for WhiteNoise: hashed names and compressed copies).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DJANGO_DEVELOPMENT="${DJANGO_DEVELOPMENT:-1}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/webhooks}"

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  command -v python3.11 >/dev/null || { echo "python3.11 is required but not on PATH." >&2; exit 1; }
  echo "Creating $venv (python3.11)"
  python3.11 -m venv "$venv"
fi

# Install only when the requirements changed since the last successful install.
stamp="$venv/.requirements.sha"
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "Installing requirements-dev.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" >"$stamp"
fi

"$venv/bin/python" scripts/check_services.py --create-database
"$venv/bin/python" manage.py migrate --noinput
"$venv/bin/python" manage.py collectstatic --noinput --verbosity 0
