#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium (the browser tests drive it with
# Playwright). Present: exit 0 at once. Missing: install the Debian package with apt-get,
# quietly. Browsers are never downloaded through 'playwright install'.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[ensure_chromium] /usr/bin/chromium is missing and apt-get is not available;" \
         "install Chromium with the system's package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "[ensure_chromium] need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi
echo "[ensure_chromium] installing Debian's chromium package" >&2
log="$(mktemp)"
if ! { $sudo apt-get update -qq && \
       DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-liberation; } \
       >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    echo "[ensure_chromium] apt-get install chromium failed" >&2
    exit 1
fi
rm -f "$log"
if [ ! -x /usr/bin/chromium ]; then
    echo "[ensure_chromium] chromium installed but /usr/bin/chromium is still missing" >&2
    exit 1
fi
echo "[ensure_chromium] $(/usr/bin/chromium --version 2>/dev/null || echo chromium) ready" >&2
