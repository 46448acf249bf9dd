# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser run test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch/torchvision pinned first: these builds are on this machine's disk (no multi-GB download).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/privbench run

# The HTML leaderboard is tested in a real headless browser: Debian's chromium and its driver.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver fonts-liberation >/dev/null; \
	else echo "note: no chromium/chromedriver (apt-get install chromium chromium-driver);" \
		"the browser test of the HTML leaderboard will skip"; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check privbench plugins tests benchmarks docs/examples
	$(BIN)/ruff format --check privbench plugins tests benchmarks docs/examples

clean:
	rm -rf $(VENV) privbench-workspace
