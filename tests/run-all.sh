#!/bin/sh
# Build hypha and run every test, as a newcomer or CI does:
#   1. install the Debian packages it needs (deploy/install-deps.sh)
#   2. fuzz targets: build with clang + libFuzzer, run each briefly (ctest -R ^fuzz_)
#   3. ASan+UBSan build, whole suite
#   4. normal -Werror build, whole suite; then test_supervision.py again with preload on
#   5. the Debian package: built, installed with dpkg, checked, purged (needs root or sudo)
# Each stage has its own build directory; a failing stage stops the run.
# Environment: HYPHA_FUZZ_SECONDS (default 15) per fuzz target; JOBS.
set -eu
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
FUZZ_SECONDS=${HYPHA_FUZZ_SECONDS:-15}
start=$(date +%s)

step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

step "dependencies"
./deploy/install-deps.sh

step "fuzz targets (clang, libFuzzer, ${FUZZ_SECONDS}s each)"
cmake -S . -B build-fuzz -DHYPHA_FUZZ=ON -DCMAKE_C_COMPILER=clang \
      -DHYPHA_FUZZ_SECONDS="$FUZZ_SECONDS" >/dev/null
cmake --build build-fuzz -j"$JOBS" --target fuzz_tlv fuzz_contracts fuzz_topology fuzz_decode fuzz_listen_hs fuzz_control fuzz_wproto fuzz_seeds
ctest --test-dir build-fuzz -R '^fuzz_' --output-on-failure

step "ASan + UBSan build and tests"
cmake -S . -B build-asan -DHYPHA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$JOBS"

step "build (-Wall -Wextra -Werror) and tests"
cmake -S . -B build >/dev/null
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j"$JOBS"
# the supervision suite once more with preload on (hyphatest.with_preload), in ctest's e2e environment
HYPHA_TEST_PRELOAD=1 HYPHA_BUILD="$PWD/build" HYPHA_SOURCE="$PWD" HYPHA_VECTORS="$PWD/tests/vectors" HYPHA_CODEGEN="$PWD/build/hypha-codegen" HYPHAD="$PWD/build/hyphad" \
    python3 -m unittest discover -v -s tests/e2e -p test_supervision.py

step "Debian package: build, install, check what it installed, purge"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO=none; fi
if [ "$SUDO" = none ]; then
    echo "skipped: installing a package needs root or sudo"
else
    cmake -S . -B build-deb -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
    cmake --build build-deb -j"$JOBS" --target hyphad hyphactl hypha-codegen man
    (cd build-deb && cpack -G DEB >/dev/null)
    deb=$(ls build-deb/hypha_*.deb)
    $SUDO dpkg -i "$deb"
    trap '$SUDO dpkg --purge hypha >/dev/null' EXIT
    /usr/bin/hyphactl --version
    /usr/bin/hyphad --check /usr/share/doc/hypha/examples/sdk/topology.yaml >/dev/null
    man -w hyphactl hyphad hypha-codegen hypha-topology >/dev/null
    /usr/bin/python3 -c "import hypha.testing"
    if command -v systemd-analyze >/dev/null; then systemd-analyze verify /usr/lib/systemd/system/hyphad.service; fi
    $SUDO dpkg --purge hypha
    trap - EXIT
    if [ -e /usr/bin/hyphad ]; then echo "the purge left /usr/bin/hyphad" >&2; exit 1; fi
fi

step "all tests passed in $(( $(date +%s) - start ))s"
