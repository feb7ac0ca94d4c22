#!/usr/bin/env bash
# Refresh the dashboard's vendored front-end files from the npm registry, as package-lock.json
# pins them, into ../static/vendor (committed: running ClawHQ needs no npm).
# Change a version in package.json, run `npm install --package-lock-only`, then this.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund >/dev/null
out=../static/vendor
mkdir -p "$out"
cp node_modules/htmx.org/dist/htmx.min.js "$out/htmx.min.js"
cp node_modules/htmx.org/LICENSE "$out/htmx.LICENSE"
cp node_modules/htmx-ext-sse/dist/sse.min.js "$out/htmx-ext-sse.min.js"
cp node_modules/htmx-ext-sse/LICENSE "$out/htmx-ext-sse.LICENSE" 2>/dev/null \
  || cp node_modules/htmx.org/LICENSE "$out/htmx-ext-sse.LICENSE"
rm -rf node_modules
echo "vendored: $(cd "$out" && ls)"
