#!/usr/bin/env bash
# Tools some tests use, installed when missing from Debian's packages; never fatal:
# a test whose tool is still missing is skipped and says why.
# - chromium and chromedriver: the dashboard's browser test;
# - promtool: the Prometheus config, the dashboard's queries and the alerting
#   rules (tests/test_alerts.py). It is unpacked from the prometheus package into
#   .tools/bin (gitignored), not installed, so no Prometheus server is set up;
# - docker-compose (the Python one, without docker.io): `docker-compose config`
#   on docker-compose.yml.
# Sourced by scripts/test.sh: it puts .tools/bin on PATH.
tools_dir="$PWD/.tools"
export PATH="$tools_dir/bin:$PATH"

source scripts/apt.sh

# download_prometheus DIR: the prometheus .deb into DIR (no root needed).
download_prometheus() {
  (cd "$1" && apt-get download prometheus) >/dev/null 2>&1
}

# unpack_promtool: promtool alone from the prometheus .deb, into .tools/bin.
unpack_promtool() {
  local work
  work=$(mktemp -d)
  apt_retry download_prometheus "$work" || { rm -rf "$work"; return 1; }
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x" &&
    mkdir -p "$tools_dir/bin" &&
    cp "$work/x/usr/bin/promtool" "$tools_dir/bin/promtool"
  local status=$?
  rm -rf "$work"
  return $status
}

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "Installing chromium and chromium-driver (browser tests)"
  apt_install chromium chromium-driver ||
    echo "warning: chromium not installed; the dashboard browser test will be skipped." >&2
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "Unpacking promtool into .tools/bin (Prometheus config and alert tests)"
  unpack_promtool ||
    echo "warning: promtool not available; its tests will be skipped." >&2
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "Installing docker-compose (checks docker-compose.yml; no Docker engine)"
  apt_install --no-install-recommends docker-compose ||
    echo "warning: docker-compose not installed; its check will be skipped." >&2
fi
