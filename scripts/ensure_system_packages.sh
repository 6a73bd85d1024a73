#!/usr/bin/env bash
# Debian packages the test suite uses: pdftoppm (poppler-utils) to render PDF pages, chromium for browser tests.
set -uo pipefail
missing=()
command -v pdftoppm >/dev/null || missing+=(poppler-utils)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
    || echo "[setup] could not install ${missing[*]}; the tests that need them will say so"
fi
exit 0
