#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv in .venv and install whyrec into it.
# Idempotent: the install runs again only when pyproject.toml, constraints.txt or
# the requested extras change. Usage: scripts/bootstrap.sh [EXTRAS]   (default: local,dev)
# WHYREC_VENV=DIR installs into another virtualenv (e.g. .venv-lenskit: LensKit needs
# pandas 2, so its tests get a venv of their own and .venv keeps the newest pandas).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-local,dev}"
venv="${WHYREC_VENV:-$root/.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
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
case ",$extras," in
    *",local,"*) note=" (first run builds llama-cpp-python: ~5 min)" ;;
    *) note="" ;;
esac
echo "[bootstrap] installing whyrec[$extras] into $venv$note"
started=$SECONDS
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
# llama.cpp's default -march=native build enables every instruction the CPU reports; on
# machines with AMX tiles that build crashed at the first decode (general protection
# fault in libggml-cpu, seen 2026-12-07). A portable AVX2 build runs everywhere here.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
"$venv/bin/python" -m pip install --disable-pip-version-check -q \
    -c "$root/constraints.txt" -e "$root[$extras]"
# The built wheel is cached by pip whatever CMAKE_ARGS said: check that the local model
# really decodes, and rebuild llama-cpp-python without the cache when it does not.
case ",$extras," in *",local,"*)
    if ! "$venv/bin/python" "$root/scripts/llama_smoke.py" >/dev/null 2>&1; then
        echo "[bootstrap] the llama-cpp-python build cannot decode here; rebuilding it (~5 min)"
        "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-cache-dir \
            --force-reinstall --no-deps -c "$root/constraints.txt" llama-cpp-python
        "$venv/bin/python" "$root/scripts/llama_smoke.py"
    fi
    ;;
esac
echo "$stamp" > "$stamp_file"
took=$((SECONDS - started))
echo "[bootstrap] done in $((took / 60)) min $((took % 60)) s"
