#!/usr/bin/env bash
# Sourced by scripts that install tools from Debian's packages when missing
# (test_tools.sh, bench.sh). `apt_install [OPTION...] PACKAGE...` installs them
# (options such as --no-install-recommends go first), refreshing the package
# lists once if the first try fails; it returns non-zero, never exits, when
# apt-get is unusable here (not root, no passwordless sudo) or the install
# fails. `apt_refresh` refreshes the lists, once per script; `apt_retry COMMAND...`
# runs a command and, if it fails, runs it again after that refresh.
apt_get=""
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt_get="env DEBIAN_FRONTEND=noninteractive apt-get"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt_get="sudo -n env DEBIAN_FRONTEND=noninteractive apt-get"
  fi
fi
apt_refreshed=""

apt_refresh() {
  [ -n "$apt_get" ] && [ -z "$apt_refreshed" ] || return 1
  apt_refreshed=1
  $apt_get update -qq >/dev/null 2>&1
}

apt_retry() {
  "$@" && return 0
  apt_refresh && "$@"
}

apt_install() {
  [ -n "$apt_get" ] || return 1
  apt_retry $apt_get install -y -qq "$@" >/dev/null 2>&1
}
