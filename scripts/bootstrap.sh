#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv in .venv and install whyrec into it.
# Idempotent: the install runs again only when pyproject.toml, constraints.txt or
# the requested extras change. Usage: scripts/bootstrap.sh [EXTRAS]   (default: local,dev)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-local,dev}"
venv="$root/.venv"
py="${WHYREC_PYTHON:-python3}"

if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "whyrec needs Python >= 3.11; '$py' is $("$py" --version 2>&1 || echo missing)." >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "[bootstrap] creating $venv"
    "$py" -m venv "$venv"
fi
stamp_file="$venv/.whyrec-install-stamp"
digest="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
# The stamp holds the digest and the extras installed; an install that already has
# every requested extra (e.g. the test setup's superset) is reused as it is.
if [ -f "$stamp_file" ]; then
    read -r old_digest old_extras < "$stamp_file" || true
    if [ "${old_digest:-}" = "$digest" ]; then
        missing=0
        for e in ${extras//,/ }; do
            case ",${old_extras:-}," in *",$e,"*) ;; *) missing=1 ;; esac
        done
        [ "$missing" = 0 ] && exit 0
        extras="$(printf '%s\n' ${old_extras//,/ } ${extras//,/ } | sort -u | paste -sd, -)"
    fi
fi
stamp="$digest $extras"
echo "[bootstrap] installing whyrec[$extras] into $venv (first run builds llama-cpp-python: ~6 min)"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
"$venv/bin/python" -m pip install --disable-pip-version-check -q \
    -c "$root/constraints.txt" -e "$root[$extras]"
echo "$stamp" > "$stamp_file"
echo "[bootstrap] done"
