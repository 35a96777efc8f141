#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs it.
# Safe to re-run: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients the end-to-end tests drive. A missing one fails a test; it is never skipped.
packages=(curl ca-certificates openssl gh
  # `axtary connect`: a real browser (Chromium driven over WebDriver) and a real Secret Service
  # (gnome-keyring in a private D-Bus session; secret-tool reads it back independently).
  chromium chromium-driver gnome-keyring dbus-daemon dbus-bin libsecret-tools)

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

cargo test --locked
