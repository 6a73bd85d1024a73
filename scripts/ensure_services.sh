#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the tests use, where the machine has them and they are not running.
# Locally a service that cannot be started only makes its tests skip; under CI (CI=true) this script fails and says
# which service is missing, because CI must run every test.
set -uo pipefail
under_ci=false
[ "${CI:-}" = "true" ] && under_ci=true
problems=()

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "[services] starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
      || echo "[services] pg_ctlcluster could not start PostgreSQL"
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null \
    || problems+=("PostgreSQL is not answering on 127.0.0.1:5432 (apt-get install postgresql, then rerun)")
fi

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    echo "[services] starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null \
      || echo "[services] redis-server could not start"
    for _ in $(seq 1 10); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 \
    || problems+=("Redis is not answering on 127.0.0.1:6379 (apt-get install redis-server, then rerun)")
fi

if [ ${#problems[@]} -gt 0 ]; then
  for problem in "${problems[@]}"; do echo "[services] $problem" >&2; done
  if $under_ci; then
    echo "[services] CI=true needs every service the tests use; stopping." >&2
    exit 1
  fi
  echo "[services] the tests that need them will be skipped." >&2
fi
exit 0
