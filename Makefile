# The two commands a user needs are `make demo` and `make test`.
# Every step installs what it needs itself and skips what is already there.
SHELL := /bin/bash
.DEFAULT_GOAL := help
RUN := source scripts/lib.sh && activate_toolchain &&

.PHONY: benchmark chaos demo demo-down help test setup host-deps venv image lint yamllint ansible-lint ruff changelog-lint sanity unit argument-specs build molecule clean

help:
	@echo "make demo       the whole stack (site.yml) on local systemd test hosts, with a real task round trip"
	@echo "                (Debian 13 hosts; SUITE=bookworm for Debian 12)"
	@echo "make demo-down  remove the demo hosts"
	@echo "make test       full suite: setup, lint, sanity, unit, argument specs, build, molecule"
	@echo "make molecule   only the molecule scenarios (SCENARIO=name for one)"
	@echo "make chaos      the full chaos run: 1000 tasks, every fault 3 times, on Redis, RabbitMQ, a RabbitMQ cluster and Redis with Sentinel"
	@echo "make lint       yamllint, ansible-lint (production profile), ruff, changelog fragments"
	@echo "make benchmark  restart gaps, site.yml times, crash recovery, poison tasks, watchdog and soak, installers, fleet deploys, a RabbitMQ cluster's and Sentinel's failover (docs/benchmarks.md; PARTS=restart, stack, crash, watchdog, install, fleet, ha or ha-redis)"
	@echo "make clean      remove this checkout's .cache (the shared venv and image stay)"

demo: setup
	@scripts/demo.sh up $(SUITE)

demo-down: venv
	@scripts/demo.sh down

# The steps of `make test`, in order; scripts/test.sh runs each as `make STEP` and times it,
# molecule in the background beside the steps after it.
TEST_STEPS := setup molecule yamllint ansible-lint ruff changelog-lint sanity unit argument-specs build

test:
	@scripts/test.sh $(TEST_STEPS)

setup: host-deps venv image

host-deps:
	@scripts/host-deps.sh

venv:
	@scripts/controller-venv.sh

image: host-deps
	@scripts/testhost-image.sh

lint: yamllint ansible-lint ruff changelog-lint

yamllint: venv
	@$(RUN) yamllint --strict .

ansible-lint: venv
	@$(RUN) ansible-lint --profile production --strict

ruff: venv
	@$(RUN) ruff check . && ruff format --check .

changelog-lint: venv
	@$(RUN) antsibull-changelog lint

sanity: venv
	@scripts/sanity.sh

unit: venv
	@$(RUN) pytest tests/unit

argument-specs: venv
	@$(RUN) python scripts/check_argument_specs.py roles

build: venv
	@scripts/build-install.sh

molecule: setup
	@scripts/molecule.sh $(SCENARIO)

# `make test` runs the chaos scenarios short (200 tasks, every fault once); this is the full run,
# with a RabbitMQ cluster's failover (ha-rabbitmq) and Redis Sentinel's (ha-redis).
chaos: setup
	@CHAOS_TASKS=1000 CHAOS_ROUNDS=3 HA_TASKS=1000 scripts/molecule.sh chaos-redis chaos-rabbitmq ha-rabbitmq ha-redis

# Not part of `make test`: a report, not an assertion.
benchmark: setup
	@scripts/benchmark.sh $(PARTS)

clean:
	rm -rf .cache
