# The two commands a newcomer runs: `make demo` and `make test`. Each sets up what it needs first.
PY := .venv/bin/python
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup demo test lint bench chaos compose-check clean fresh-check

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m pipeline.local.demo

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check pipeline workers tests bench
	$(PY) -m mypy pipeline workers

bench: setup
	$(PY) -m bench.run_all

chaos: setup
	$(PY) -m bench.chaos

compose-check:
	@if command -v docker-compose >/dev/null; then docker-compose config -q; else docker compose config -q; fi && echo 'docker-compose.yml is valid'

# As root: `make demo` and `make test` of the committed tree in a fresh Debian bookworm chroot (scripts/fresh-check.sh;
# slow, not part of .ci/run). FRESH_ARGS=--rebuild debootstraps the cached root again.
fresh-check:
	@bash scripts/fresh-check.sh $(FRESH_ARGS)

clean:
	rm -rf demo-output .pytest_cache
