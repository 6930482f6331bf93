#!/usr/bin/env bash
# Reproduce the vendored files from the npm packages pinned in package.json:
# downloads each tarball with `npm pack` (the npm registry), copies its browser build and
# licence here. Run from anywhere; needs npm. Commit the result.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
VERSION=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dependencies"]["chart.js"])' "$HERE/package.json")
(cd "$WORK" && npm pack "chart.js@$VERSION" --silent >/dev/null && tar xzf "chart.js-$VERSION.tgz")
cp "$WORK/package/dist/chart.umd.min.js" "$HERE/chartjs/chart.umd.min.js"
cp "$WORK/package/LICENSE.md" "$HERE/chartjs/LICENSE.md"
echo "chart.js $VERSION" > "$HERE/chartjs/VERSION"
sha256sum "$HERE/chartjs/chart.umd.min.js"
