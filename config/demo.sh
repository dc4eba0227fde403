#!/bin/sh
# The demo: validate the demo topology, then run hyphad with the example
# Python workers for a while: they start, say `ready`, the ticker publishes,
# flaky crashes and is restarted with backoff, and SIGTERM stops them all.
# Midway, hyphactl shows what an on-call engineer sees: status, health, the
# live frames (tap), a worker's stderr (tail) and a restart.
set -eu
cd "$(dirname "$0")/.."
build=${HYPHA_BUILD:-build}
echo "== hyphad --check config/demo.yaml"
"$build"/hyphad --check config/demo.yaml
echo
echo "== the same, as JSON for scripts: hyphad --check --json config/demo.yaml | head"
"$build"/hyphad --check --json config/demo.yaml | head -n 12
echo "   ..."
echo
echo "== a broken copy is refused with file:line:col and exit 2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp config/contracts.yaml "$tmp/"
sed 's/instances: 2/instances: two/' config/demo.yaml > "$tmp/demo.yaml"
if "$build"/hyphad --check "$tmp/demo.yaml"; then
    echo "demo: the broken copy was accepted" >&2
    exit 1
else
    echo "(exit $?)"
fi

seconds=${DEMO_SECONDS:-8}
echo
echo "== hyphad config/demo.yaml, for ${seconds}s (then SIGTERM, as Ctrl-C would)"
"$build"/hyphad config/demo.yaml &
pid=$!
ctl="$build/hyphactl --config config/demo.yaml"
sleep 3
echo
echo "== hyphactl status"
$ctl status || true
echo
echo "== hyphactl health   (exit 0 healthy, 1 degraded, 2 unhealthy, 3 unreachable)"
$ctl health || echo "(exit $?)"
echo
echo "== hyphactl tap CounterUpdate TextMessage --count 3   (live frames, decoded)"
$ctl tap CounterUpdate TextMessage --count 3 || true
echo
echo "== hyphactl tail flaky -n 3"
$ctl tail flaky -n 3 || true
echo
echo "== hyphactl restart ticker"
$ctl restart ticker || true
echo
rest=$((seconds > 4 ? seconds - 4 : 1))
sleep "$rest"
kill -TERM "$pid"
wait "$pid"
echo "(hyphad exited $?)"
