# Two entry points for people; CMake does the building (see README.md).
#   make demo   install deps, build, run the demo topology
#   make test   install deps, build, run every test (what CI runs)
#   make soak   install deps, build, run the fault suite for SOAK_SECONDS
#               (default 30 minutes) with SOAK_SEED (default: a random
#               seed, printed first); see docs/reliability.md
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SOAK_SECONDS ?= 1800
SOAK_SEED ?=

.PHONY: demo test soak build clean

build:
	./deploy/install-deps.sh
	cmake -S . -B build >/dev/null
	cmake --build build -j$(JOBS)

demo: build
	./config/demo.sh

test:
	./tests/run-all.sh

soak: build
	python3 tests/soak/soak.py --duration $(SOAK_SECONDS) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

clean:
	rm -rf build build-asan build-fuzz build-deb
