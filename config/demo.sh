#!/bin/sh
# The demo: validate the demo topology and show it resolved. hyphad with its
# embedded bus and the example Python workers joins this as supervision and the
# runtime land (see docs/status.md).
set -eu
cd "$(dirname "$0")/.."
echo "== hyphad --check config/demo.yaml"
./build/hyphad --check config/demo.yaml
echo
echo "== the same, as JSON for scripts: hyphad --check --json config/demo.yaml | head"
./build/hyphad --check --json config/demo.yaml | head -n 12
echo "   ..."
echo
echo "== a broken copy is refused with file:line:col and exit 2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp config/contracts.yaml "$tmp/"
sed 's/instances: 2/instances: two/' config/demo.yaml > "$tmp/demo.yaml"
if ./build/hyphad --check "$tmp/demo.yaml"; then
    echo "demo: the broken copy was accepted" >&2
    exit 1
else
    echo "(exit $?)"
fi
