#!/bin/sh
# The demo: validate the demo topology, then run hyphad with the example
# Python workers for a while: they start, say `ready`, the ticker publishes,
# flaky crashes and is restarted with backoff, and SIGTERM stops them all.
# Midway, hyphactl shows what an on-call engineer sees: status, health, the
# live frames (tap), a worker's stderr (tail) and a restart.
#
# HYPHA_DEMO_DIR (default /tmp/hypha-demo, where config/demo.yaml puts its
# sockets): another directory runs a copy of config/demo.yaml with its
# sockets there instead (the tests do, so that runs never share sockets).
set -eu
cd "$(dirname "$0")/.."
build=${HYPHA_BUILD:-build}
demo_dir=${HYPHA_DEMO_DIR:-/tmp/hypha-demo}
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

topology=config/demo.yaml
if [ "$demo_dir" != /tmp/hypha-demo ]; then
    # The copy lives in $tmp: it names the schema by its absolute path and
    # gives each worker cwd config/, so relative paths keep their meaning.
    config=$(pwd)/config
    topology=$tmp/demo-run.yaml
    awk -v dir="${demo_dir%/}" -v config="$config" '
        { gsub("/tmp/hypha-demo/", dir "/") }
        /^schema: contracts.yaml/ { sub("contracts.yaml", "\"" config "/contracts.yaml\"") }
        { print }
        /^    command: / { print "    cwd: \"" config "\"" }' config/demo.yaml > "$topology"
fi

seconds=${DEMO_SECONDS:-8}
echo
echo "== hyphad config/demo.yaml, for ${seconds}s (then SIGTERM, as Ctrl-C would)"
"$build"/hyphad "$topology" &
pid=$!
ctl="$build/hyphactl --config $topology"
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
