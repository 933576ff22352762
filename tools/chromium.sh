#!/usr/bin/env bash
# Headless Chromium and chromedriver for the dashboard's browser test (tests/service/browser.rs), the way
# pg.sh provides PostgreSQL: Debian's `chromium` and `chromium-driver`, installed when missing and when
# running as root with apt; otherwise it says what to install and the test is skipped (it fails under CI).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "chromium.sh: installing Debian's chromium and chromium-driver" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
else
  echo "chromium.sh: chromium and chromedriver are missing (apt-get install chromium chromium-driver);" \
       "the browser test will be skipped" >&2
fi
