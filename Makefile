# Two commands: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The browser client: npm packages from static/package-lock.json, bundled by esbuild into
# static/dist/ (git-ignored). `npm ci` runs again only when the lock file changes.
NODE_STAMP := static/node_modules/.installed
BUNDLE := static/dist/.built
CLIENT_SRC := $(wildcard static/src/*.js)

.PHONY: run test lint setup clean web bench bench-smoke bench-report

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make bench`: the extras of the benchmark (peer baseline, py-spy, pyinstrument); nothing that
# changes the server's speed: uvloop and httptools are the server's own dependencies.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

$(NODE_STAMP): static/package-lock.json static/package.json
	cd static && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(BUNDLE): $(NODE_STAMP) $(CLIENT_SRC)
	cd static && npm run --silent build
	touch $(BUNDLE)

web: $(BUNDLE)

setup: $(STAMP) $(BUNDLE)

run: $(STAMP) $(BUNDLE)
	$(BIN)/menteo-rooms migrate
	$(BIN)/menteo-rooms demo
	exec $(BIN)/menteo-rooms serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) $(BUNDLE) lint
	cd static && npm test --silent
	$(BIN)/pytest -n 2 --dist loadfile

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache static/node_modules static/dist

# Every scenario of issue 5 at full size (minutes; run it on a quiet machine): a table on
# stdout, JSON in bench/results/. `make bench-smoke`: a tiny version of each, in seconds.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --smoke $(BENCH_ARGS)

# docs/benchmarks.md and its charts, generated from the results kept in docs/bench/results/
# (copy a run's JSON there from bench/results/ to publish it); never edited by hand.
bench-report: $(STAMP)
	$(BIN)/python -m bench.report docs/bench/results/*.json --out docs/benchmarks.md --charts docs/bench
