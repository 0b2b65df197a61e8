# One-command set-up: every target creates .venv with pip when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/quickstart-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test bench browser clean results results-full

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
	$(BIN)/python -m pytest tests

# The headline table and figures (quick setting): results/results.md.
results: $(STAMP)
	rm -rf results/runs
	$(BIN)/fedmjp results --quick --out results

# The full setting (hours on 2 cores): results-full/results.md.
results-full: $(STAMP)
	rm -rf results-full/runs
	$(BIN)/fedmjp results --out results-full

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) runs
