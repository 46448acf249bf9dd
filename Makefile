# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system run test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch/torchvision pinned first: these builds are on this machine's disk (no multi-GB download).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) system

run: $(STAMP) system
	$(BIN)/privbench run

# System packages from Debian, installed with apt-get where this runs as root and noted
# otherwise: chromium and its driver (the HTML leaderboard is tested in a real headless
# browser) and dataset-fashion-mnist (the real Fashion-MNIST that the fashion-mnist dataset
# reads by default). Without them, the tests that need them skip and say why.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

system:
	@missing=""; \
	if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		missing="chromium chromium-driver fonts-liberation"; fi; \
	if [ ! -f $(FASHION_MNIST) ]; then missing="$$missing dataset-fashion-mnist"; fi; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; } \
		|| echo "note: apt-get could not install$$missing; the tests that need it skip"; \
	else echo "note: missing system packages; install them with:" \
		"sudo apt-get install$$missing"; fi

test: $(STAMP) system
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check privbench plugins tests benchmarks docs/examples
	$(BIN)/ruff format --check privbench plugins tests benchmarks docs/examples

clean:
	rm -rf $(VENV) privbench-workspace
