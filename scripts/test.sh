#!/usr/bin/env bash
# The test command: set up .venv if needed, make sure the services the suite uses run, then run pytest.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m slow` for the long tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
scripts/ensure_services.sh
scripts/ensure_system_packages.sh
exec .venv/bin/python -m pytest -m "${PYTEST_MARKERS:-not slow}" "$@"
