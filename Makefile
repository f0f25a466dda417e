# kiln: the two commands a fresh Debian 12 machine (with the Rust toolchain) needs.
#   make demo   installs what is missing, builds, runs the example jobs through `kiln run`
#   make test   installs what is missing, builds, runs every test (what .ci/run calls)
#   make demo-hybrid  the hybrid on one machine: kiln route, a container worker and the
#               function under the Lambda emulator; a burst of mixed jobs, a JSON summary last

CARGO ?= cargo
DEMO_STORE := $(CURDIR)/data/demo-store

# make fuzz    every fuzz target (fuzz/) for FUZZ_SECONDS (default 60) each; see fuzz/README.md
.PHONY: fuzz setup demo demo-hybrid test bench-thumbnail bench-infer bench-render fixtures build-release clean

setup:
	@bash scripts/setup.sh

fixtures: setup
	@bash scripts/fetch-tools.sh
	@bash scripts/fetch-photos.sh
	@bash scripts/make-corpus.sh

build-release: setup
	$(CARGO) build --release -p kiln-worker

demo: build-release
	@bash scripts/fetch-photos.sh
	@rm -rf $(DEMO_STORE)
	@echo "== kiln run examples/thumbnails.jsonl"
	@KILN_STORE_URL=file://$(DEMO_STORE)/ ./target/release/kiln run examples/thumbnails.jsonl | tee data/demo-results.jsonl
	@echo
	@echo "== results: data/demo-results.jsonl (one JSON result per job)"
	@echo "== outputs: $(DEMO_STORE)/outputs/<job id>/"
	@ls $(DEMO_STORE)/outputs/*/ | head -40

demo-hybrid: fixtures
	$(CARGO) build --workspace $(TEST_FEATURES)
	@bash scripts/demo-hybrid.sh target/debug/kiln

# The end-to-end tests drive the test-only `debug` job kind, which only this feature compiles in.
TEST_FEATURES := --features kiln-worker/debug-kind

test: fixtures
	python3 scripts/check-module-cycles.py
	python3 scripts/check-architecture-paths.py ARCHITECTURE.md jobs/src/*/README.md
	$(CARGO) build --workspace $(TEST_FEATURES)
	$(CARGO) test --workspace $(TEST_FEATURES)

fuzz: fixtures
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} bash scripts/fuzz.sh

bench-thumbnail: build-release fixtures
	bash benches/thumbnail.sh --write

bench-infer: build-release fixtures
	.tools/venv/bin/python benches/infer_bench.py --kiln target/release/kiln
bench-render: build-release fixtures
	bash benches/render.sh --label lavapipe --write

clean:
	rm -rf data target
