#!/bin/sh
# The demo: validate the demo topology, then run hyphad with the example
# Python workers for a while: they start, say `ready`, the ticker publishes,
# flaky crashes and is restarted with backoff, and SIGTERM stops them all.
# (Routing frames between workers comes with the relay: docs/status.md.)
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

seconds=${DEMO_SECONDS:-8}
echo
echo "== hyphad config/demo.yaml, for ${seconds}s (then SIGTERM, as Ctrl-C would)"
./build/hyphad config/demo.yaml &
pid=$!
sleep "$seconds"
kill -TERM "$pid"
wait "$pid"
echo "(hyphad exited $?)"
