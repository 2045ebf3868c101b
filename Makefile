.PHONY: run test faults scale setup bench lint lint-docker format migrate

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

# The long fault-injection run (RELIABILITY.md); FAULTS_ARGS="--short" for the quick one.
faults:
	bash scripts/setup.sh
	.venv/bin/python -m tests.faults $(FAULTS_ARGS)

setup:
	bash scripts/setup.sh

# Workers on several simulated hosts and a second beat (RELIABILITY.md), ~2 minutes.
scale:
	bash scripts/test.sh -m scale tests/scale tests/cluster

# Benchmarks (bench/, BENCHMARKS.md): `make bench ARGS="--quick"` for a smoke run.
bench:
	bash scripts/bench.sh $(ARGS)

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

lint-docker: export PATH := $(CURDIR)/.tools/bin:$(PATH)
lint-docker:
	.venv/bin/hadolint Dockerfile
	.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@if command -v promtool >/dev/null; then promtool check config deploy/prometheus/prometheus.yml; else echo "promtool not installed (make test unpacks it into .tools/bin): skipped"; fi
	@if command -v docker-compose >/dev/null; then DJANGO_SECRET_KEY=x FLOWER_BASIC_AUTH=x:x GRAFANA_ADMIN_PASSWORD=x POSTGRES_PASSWORD=x RABBITMQ_USER=x RABBITMQ_PASSWORD=x docker-compose config -q && echo "docker-compose config: ok"; else echo "docker-compose not installed (apt-get install docker-compose): skipped"; fi

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

migrate:
	DJANGO_DEVELOPMENT=$${DJANGO_DEVELOPMENT:-1} .venv/bin/python manage.py migrate --noinput
