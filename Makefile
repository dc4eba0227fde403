# Two entry points for people; CMake does the building (see README.md).
#   make demo   install deps, build, run the demo topology
#   make test   install deps, build, run every test (what CI runs)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo test build clean

build:
	./deploy/install-deps.sh
	cmake -S . -B build >/dev/null
	cmake --build build -j$(JOBS)

demo: build
	./config/demo.sh

test:
	./tests/run-all.sh

clean:
	rm -rf build build-asan build-fuzz
