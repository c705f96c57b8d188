#!/usr/bin/env bash
# Run whyrec's test suite: sets up .venv if needed, lints, then runs pytest.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh local,dev,ray,tune,postgres,implicit || exit 1

# the browser tests drive Debian's Chromium; CI must have it, a local run may skip them
if ! bash scripts/ensure_chromium.sh; then
    if [ -n "${CI:-}" ]; then exit 1; fi
    echo "[test] warning: no Chromium; the browser tests will be skipped" >&2
fi

# the shared-store tests start throwaway PostgreSQL clusters from Debian's package; CI must
# have it, a local run may skip them
if ! bash scripts/ensure_postgres.sh; then
    if [ -n "${CI:-}" ]; then exit 1; fi
    echo "[test] warning: no PostgreSQL; the PostgreSQL store tests will be skipped" >&2
fi

echo "[test] ruff"
.venv/bin/ruff check src tests bench || exit 1
.venv/bin/ruff format --check src tests bench || exit 1

# the layers and contracts of pyproject.toml [tool.importlinter] (docs/architecture.md),
# and no import loop between any two files (a package and its own modules included)
echo "[test] import contracts"
.venv/bin/lint-imports --no-cache || exit 1
.venv/bin/python scripts/import_cycles.py || exit 1

# rooms sized to one job: no function body over 80 lines (docs/architecture.md)
echo "[test] function length"
.venv/bin/python scripts/long_functions.py || exit 1

# two or more pytest-xdist workers (one per core, at most 4), whole test files each; every
# worker computes with one thread (tests/conftest.py), so two workers keep two cores busy
# without oversubscribing them. WHYREC_TEST_WORKERS=0 runs in one process (or pass -n 0).
workers="${WHYREC_TEST_WORKERS:-$(n=$(nproc); echo $(( n > 4 ? 4 : (n < 2 ? 2 : n) )))}"
echo "[test] pytest ($workers workers)"
.venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "[test] error: pytest collected no tests" >&2
    exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"

# The LensKit adapter's tests, in a virtualenv of their own: LensKit 2025.8 (the newest
# for Python 3.11) needs pandas 2, and .venv keeps the pandas a fresh install gets. Run
# when the whole suite runs (no pytest arguments) or when WHYREC_TEST_LENSKIT=1.
if [ "$#" -eq 0 ] || [ "${WHYREC_TEST_LENSKIT:-0}" = 1 ]; then
    echo "[test] LensKit adapter (.venv-lenskit: whyrec[lenskit])"
    WHYREC_VENV=.venv-lenskit bash scripts/bootstrap.sh lenskit,test || exit 1
    .venv-lenskit/bin/python -c "import lenskit" || exit 1  # never skip them silently
    .venv-lenskit/bin/python -m pytest -p no:cacheprovider tests/models/adapters/test_lenskit.py \
        tests/models/adapters/test_readme_examples.py
    rc=$?
    [ "$rc" -eq 5 ] && { echo "[test] error: no LensKit tests collected" >&2; exit 1; }
fi
exit "$rc"
