# The two commands a newcomer runs: `make demo` and `make test`. Each sets up what it needs first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench chaos lint compose-check clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m pipeline.demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench.run_all

chaos: setup
	$(PY) -m bench.chaos

compose-check:
	@if command -v docker-compose >/dev/null; then docker-compose config -q; else docker compose config -q; fi && echo 'docker-compose.yml is valid'

clean:
	rm -rf demo-output .pytest_cache
