#!/usr/bin/env bash
# The end-to-end demo on the embedded default: sets up .venv if needed, then runs
# `whyrec demo`. Extra arguments go to `whyrec demo` (see `whyrec demo --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh local,dev
exec .venv/bin/whyrec demo "$@"
