# Set-up in two commands: `make demo` runs the main job, `make test` runs the tests.
# Both create the virtualenv in .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo down demo-docker down-docker test lint venv clean

NATIVE := native/ed25519

$(STAMP): pyproject.toml $(NATIVE)/Cargo.toml $(NATIVE)/Cargo.lock $(NATIVE)/src/lib.rs
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(MAKE) --no-print-directory native
	@touch $(STAMP)

# The compiled Ed25519 verifier (native/ed25519, docs/PROTOCOL.md "Signature validity"):
# needs cargo (~/.cargo/bin is looked in too) and crates.io the first time. Without it the
# nodes verify with `cryptography` (OpenSSL), the same rule: a notice, not a failure.
.PHONY: native
native:
	@PATH="$$PATH:$$HOME/.cargo/bin"; \
	if command -v cargo >/dev/null \
	    && $(BIN)/python -m pip install --quiet ./$(NATIVE) >$(VENV)/native-ed25519.log 2>&1; then \
	    echo "shardnet_ed25519 built: signatures verified with ed25519-dalek"; \
	else \
	    $(BIN)/python -m pip uninstall --quiet --yes shardnet-ed25519 >/dev/null 2>&1; \
	    echo "notice: shardnet_ed25519 not built (cargo missing or build failed, see $(VENV)/native-ed25519.log): signatures verified with cryptography (OpenSSL)"; \
	fi

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

# The Docker twin of `make demo`: the image built offline (`make images`), the committed
# docker-compose.yml up, every node healthy (GET /v1/health: peers connected, not stalled;
# at most 180 s), a short load and the audit through the published ports, where to look.
# `make down-docker` removes the containers and their volumes.
COMPOSE := $(BIN)/python scripts/cli/compose.py
DOCKER_URL := http://127.0.0.1:8000
demo-docker: $(STAMP)
	bash scripts/image/build_images.sh
	$(COMPOSE) up -d
	@echo "waiting for every node to be healthy (at most 180 s)"
	@for i in $$(seq 90); do \
	    ids=$$($(COMPOSE) ps -q); \
	    bad=$$(docker inspect -f '{{.State.Health.Status}}' $$ids | grep -vc '^healthy$$'); \
	    [ -n "$$ids" ] && [ "$$bad" = 0 ] && exit 0; sleep 2; \
	done; $(COMPOSE) ps; \
	echo "not healthy after 180 s: curl $(DOCKER_URL)/v1/health says why;" \
	    "$(BIN)/shardnet collect --compose . packs the logs"; exit 1
	$(BIN)/shardnet load --url $(DOCKER_URL) --rate 200 --duration 5s --cross-shard 0.2
	$(BIN)/shardnet audit --url $(DOCKER_URL)
	$(BIN)/shardnet testnet status --url $(DOCKER_URL)
	@echo "Inspect: $(BIN)/shardnet logs --compose . --event block.committed | tail" \
	    "  Health: curl $(DOCKER_URL)/v1/health   Bug report: $(BIN)/shardnet collect" \
	    "--compose .   Stop: make down-docker"

down-docker: $(STAMP)
	$(COMPOSE) down -v --remove-orphans

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info $(NATIVE)/target

# Docker image without registry or index access: base stand-in (debootstrap) when
# python:3.11-slim cannot be pulled, host-built wheelhouse/, `docker build --network none`.
.PHONY: images
images: $(STAMP)
	bash scripts/image/build_images.sh

# The Prometheus image of the compose file's `monitoring` profile, offline too: Debian's
# `prometheus` package and its dependencies downloaded with the host's apt, installed by
# `docker build --network none -f Dockerfile.prometheus` on the same base.
.PHONY: prometheus-image
prometheus-image:
	bash scripts/image/build_prometheus_image.sh
