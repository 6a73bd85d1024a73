#!/usr/bin/env bash
# Debian packages the test suite uses: pdftoppm (poppler-utils) to render PDF pages, chromium for browser tests,
# dciodvfy (dicom3tools) to check the DICOM objects the workstation sends out, promtool (prometheus) to check the
# shipped Prometheus configuration.
# Installs what is missing when it can (root with apt-get). Locally what is still missing only makes its tests skip;
# under CI (CI=true) this script fails and says what is missing.
set -uo pipefail
needed() {
  missing=()
  command -v pdftoppm >/dev/null || missing+=(poppler-utils)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v dciodvfy >/dev/null || missing+=(dicom3tools)
  command -v promtool >/dev/null || missing+=(prometheus)
}
needed
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing ${missing[*]}"
  log=$(mktemp)
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >"$log" 2>&1; then
    echo "[setup] apt-get could not install ${missing[*]}:" >&2
    tail -n 20 "$log" >&2
  fi
  rm -f "$log"
  needed
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] missing Debian packages: ${missing[*]} (apt-get install -y ${missing[*]})" >&2
  if [ "${CI:-}" = "true" ]; then
    echo "[setup] CI=true needs them to run every test; stopping." >&2
    exit 1
  fi
  echo "[setup] the tests that need them will be skipped." >&2
fi
exit 0
