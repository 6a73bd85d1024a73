#!/usr/bin/env bash
# The run command: set up .venv if needed, then start the backend (and the Streamlit UI once it exists) on the
# embedded defaults (SQLite + local files under var/, the shipped model). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
HOST="${API_HOST:-127.0.0.1}"
API_PORT="${API_PORT:-8000}"
UI_PORT="${UI_PORT:-8501}"
export BACKEND_URL="${BACKEND_URL:-http://$HOST:$API_PORT}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM

# First start: build the similar-case library from the reference data set (a few minutes, once).
DATA_DIR="${CXR_DATA_DIR:-../shared/datasets}"
if [ ! -d "${VAR_DIR:-var}/retrieval" ] && [ -d "$DATA_DIR/kermany-pneumonia" ]; then
  echo "[setup] building the similar-case library from $DATA_DIR/kermany-pneumonia (train split)"
  .venv/bin/python -m case_retrieval build --data "$DATA_DIR/kermany-pneumonia" --split train
fi
# First start: make sure an admin exists (ADMIN_USERNAME/ADMIN_PASSWORD, else a random password printed once).
.venv/bin/python -m api.admin ensure-admin
.venv/bin/python -m uvicorn api.main:app --host "$HOST" --port "$API_PORT" --no-proxy-headers &
pids+=($!)
for _ in $(seq 1 120); do
  .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen('$BACKEND_URL/health', timeout=1)" \
    2>/dev/null && break
  sleep 1
done
echo "Backend:  $BACKEND_URL   (API docs: $BACKEND_URL/docs)"
if [ -f app.py ]; then
  .venv/bin/python -m streamlit run app.py --server.port "$UI_PORT" --server.address "$HOST" \
    --server.headless true --browser.gatherUsageStats false &
  pids+=($!)
  echo "Workstation UI: http://$HOST:$UI_PORT"
fi
wait -n
