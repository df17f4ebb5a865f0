# Set-up in two commands: `make demo` runs the main job, `make test` runs the tests.
# Both create the virtualenv in .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo down test lint venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The main job: the default testnet (2 shards x 4 validators) as local processes, a short
# load on it (live progress, then the audit), and where to look next. The testnet keeps
# running: `make down` stops it.
demo: $(STAMP)
	$(BIN)/shardnet testnet up
	$(BIN)/shardnet load --rate 400 --duration 5s --cross-shard 0.2
	$(BIN)/shardnet testnet status
	@echo "Inspect: $(BIN)/shardnet logs --event block.committed | tail   Stop: make down"

down: $(STAMP)
	$(BIN)/shardnet testnet down

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info

# Docker image without registry or index access: base stand-in (debootstrap) when
# python:3.11-slim cannot be pulled, host-built wheelhouse/, `docker build --network none`.
.PHONY: images
images: $(STAMP)
	bash scripts/image/build_images.sh
