# One-command set-up: every target creates .venv with pip when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/quickstart-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test docs bench browser clean results results-full certs docker-image deploy-up deploy-down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fedmjp simulate scenarios/quickstart.yaml --out $(RUN)
	$(BIN)/fedmjp audit $(RUN)

# The report test renders report.html in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the report rendering test will skip"

test: $(STAMP) browser
	$(BIN)/python -m pytest tests --durations=30

# The documentation site (build/site): the scenario reference regenerated from the schema, then a strict build.
docs: $(STAMP)
	$(BIN)/python -m fedmjp.scenario_reference docs/scenario.md
	$(BIN)/mkdocs build --strict

# The headline table and figures (quick setting): results/results.md.
results: $(STAMP)
	rm -rf results/runs
	$(BIN)/fedmjp results --quick --out results

# The full setting: results-full/results.md (hours on 2 cores; the measured time: docs/results/settings.md).
results-full: $(STAMP)
	rm -rf results-full/runs
	$(BIN)/fedmjp results --out results-full

# Deployment on one machine with docker-compose (see docs/deployment.md).
certs: $(STAMP)
	test -f deploy/certs/ca.crt || $(BIN)/python scripts/make_certs.py deploy/certs --nodes 2

docker-image:
	bash scripts/docker_engine.sh && bash scripts/docker_build.sh

deploy-up: certs docker-image
	docker-compose up -d

deploy-down:
	docker-compose down

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) runs
