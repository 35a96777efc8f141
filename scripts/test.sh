#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs it.
# Safe to re-run: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients the end-to-end tests drive. A missing one fails a test; it is never skipped.
packages=(curl ca-certificates openssl gh
  # `axtary connect`: a real browser (Chromium driven over WebDriver) and a real Secret Service
  # (gnome-keyring in a private D-Bus session; secret-tool reads it back independently).
  chromium chromium-driver gnome-keyring dbus-daemon dbus-bin libsecret-tools
  # Python clients (`requests`, `slack_sdk`) are installed with pip below.
  python3 python3-pip)
# Node: keep an existing install (e.g. Node 20 from NodeSource, whose nodejs package carries
# npm and conflicts with Debian's npm package); otherwise take Debian's.
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python clients for the `axtary run` tests, into the python3 the tests run. Debian marks its
# Python externally managed; this machine is a test box, so allow the install there.
if ! python3 -c 'import requests, slack_sdk' 2>/dev/null; then
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet requests slack_sdk
fi

# undici for Node's fetch through HTTPS_PROXY (tests/node/env-proxy.cjs), pinned by the lockfile.
if [ ! -d tests/node/node_modules/undici ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  (cd tests/node && npm ci --no-audit --no-fund --silent)
fi

cargo test --locked
