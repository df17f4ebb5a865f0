# The shardnet node image: one image for every node of a testnet (services differ only by
# environment and volume).
#
#   docker build -t shardnet:latest .        # with internet: dependencies from the index
#   make images                              # offline: base stand-in + wheelhouse/ + build
#
# When the build context holds a wheelhouse/ (scripts/image/build_images.sh writes it), every
# package comes from it with --no-index, so the build needs no network at all (the script
# proves it with `docker build --network none`). Without it, pip uses the package index.
# Plain Dockerfile syntax only: it builds with the legacy builder and with BuildKit.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# 1. Dependencies, in a virtualenv of their own layer: rebuilt only when pyproject.toml or
# the wheelhouse change. `wheelhouse*` matches nothing when the folder is absent;
# pyproject.toml keeps the COPY valid either way (the folder's wheels land next to it).
# Without a wheelhouse, some dependencies (fastecdsa, via libp2p) have no wheel on the index
# and compile here: a C compiler and the GMP headers for this stage only (the final image
# needs only libgmp10, which every Debian base has), and Python's headers if missing.
# The compiled Ed25519 verifier (native/ed25519) is installed when the wheelhouse has its
# wheel (build_images.sh builds it on the host with cargo); without it, the pure path.
# pip and setuptools leave the virtualenv afterwards: not needed at run time.
COPY pyproject.toml wheelhouse* /build/wheels/
RUN set -eu; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore; \
    python -m venv /opt/venv; \
    python -c "import tomllib; print(*tomllib.load(open('/build/wheels/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        >/build/requirements.txt; \
    if ls /build/wheels/*.whl >/dev/null 2>&1; then \
        echo "installing dependencies from the wheelhouse (no index)"; \
        /opt/venv/bin/pip install --no-index --find-links /build/wheels -r /build/requirements.txt; \
    else \
        echo "no wheelhouse: installing dependencies from the package index"; \
        apt-get update -qq; \
        apt-get install -y -qq --no-install-recommends gcc libc6-dev libgmp-dev >/dev/null; \
        python -c "import os, sysconfig; assert os.path.exists(sysconfig.get_paths()['include'] + '/Python.h')" \
            || apt-get install -y -qq --no-install-recommends python3-dev >/dev/null; \
        /opt/venv/bin/pip install -r /build/requirements.txt; \
    fi; \
    if ls /build/wheels/shardnet_ed25519-*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-index --no-deps /build/wheels/shardnet_ed25519-*.whl \
            && /opt/venv/bin/python -c "import shardnet_ed25519" \
            || { echo "WARNING: shardnet_ed25519 does not load here (built on a newer glibc?):" \
                     "signatures verified with cryptography"; \
                 /opt/venv/bin/pip uninstall --quiet --yes shardnet-ed25519 || true; }; \
    else \
        echo "no shardnet_ed25519 wheel: signatures verified with cryptography (OpenSSL)"; \
    fi; \
    /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools; \
    echo /opt/shardnet >/opt/venv/lib/python3.11/site-packages/shardnet-app.pth
# 2. The project, built from its sources (.dockerignore keeps the context to pyproject.toml,
# README.md, the packages and the wheelhouse) into /opt/shardnet, which the virtualenv
# sees through a .pth file: a source edit rebuilds only these small layers. The base
# image's pip drives the virtualenv's python (`--python`), so the `shardnet` script runs it.
COPY . /build/src/
RUN set -eu; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore; \
    if ls /build/wheels/*.whl >/dev/null 2>&1; then \
        set -- --no-index --find-links /build/wheels; \
    fi; \
    python -m pip --python /opt/venv/bin/python install --no-deps "$@" \
        --target /opt/shardnet /build/src; \
    /opt/shardnet/bin/shardnet --help >/dev/null

FROM ${PYTHON_IMAGE}
# A fixed, unprivileged uid/gid, so bind mounts and volumes can be prepared for it.
RUN groupadd --gid 10001 shardnet \
    && useradd --uid 10001 --gid shardnet --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin shardnet \
    && mkdir -p /data \
    && chown shardnet:shardnet /data
# iproute2 (`tc`): a container emulating a separate machine (`testnet init --latency
# --bandwidth`) shapes its own traffic at start. Offline, from the flat repository of .debs
# that scripts/image/build_images.sh downloads with the host's apt into imagedebs/
# (pyproject.toml keeps the COPY valid when the folder is absent: then apt's index).
COPY pyproject.toml imagedebs* /tmp/debs/
RUN set -eu; \
    if ls /tmp/debs/*.deb >/dev/null 2>&1; then \
        echo "deb [trusted=yes] file:/tmp/debs ./" >/tmp/debs.list; \
        set -- -o Dir::Etc::SourceList=/tmp/debs.list -o Dir::Etc::SourceParts=- \
            -o Acquire::Languages=none; \
    fi; \
    if apt-get "$@" update -qq && DEBIAN_FRONTEND=noninteractive apt-get "$@" install \
        -y -qq --no-install-recommends iproute2 >/dev/null; then \
        tc -V; \
    else \
        echo "WARNING: iproute2 not installed (no imagedebs/, no network): a container asked" \
            "for --latency/--bandwidth logs net.emulation.failed no_tc"; \
    fi; \
    rm -rf /tmp/debs /tmp/debs.list /var/lib/apt/lists/* /var/cache/apt/*.bin \
        /var/cache/apt/archives/*.deb
COPY --from=build /opt/venv /opt/venv
# API_PORT is the port of the node's HTTP API inside the container; the healthcheck reads it,
# so a node configured for another port must be given the same API_PORT in its environment.
ENV PATH=/opt/shardnet/bin:/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    API_PORT=8000
VOLUME /data
# Ready, not just up: GET /v1/health answers 503 (with its reasons) until a quorum of the
# node's shard peers is connected, and when work pends with no commit (docs/NODE.md). slim
# images have no curl: python's urllib raises on a non-2xx answer or none, exiting non-zero.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/health' % os.environ.get('API_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["shardnet"]
CMD ["node", "--home", "/data"]
USER shardnet:shardnet
# Last, so that a source edit does not redo the steps above.
COPY --from=build /opt/shardnet /opt/shardnet
