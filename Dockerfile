# The issuer's container image: `issuer serve` (and every other `issuer` command) as a non-root user.
#
#   podman build -t aws-machine-issuer .           # or: docker build -t aws-machine-issuer .
#   podman run --rm -p 8080:8080 \
#       -v ./issuer.toml:/etc/issuer/issuer.toml:ro \
#       -e ISSUER_DATABASE_URL=postgresql+asyncpg://issuer:...@db/issuer aws-machine-issuer
#
# Build arguments:
#   BASE_IMAGE  a Python 3.11+ image with `python3 -m venv` (default: the official slim image). Both
#               stages use it, so the virtual environment built in the first runs in the second.
#   PIP_CERT    a CA bundle for pip, for registries reached through a TLS-intercepting proxy
#               (`podman build -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
#               --build-arg PIP_CERT=/run/host-ca.crt`). Only the build stage sees it.
#   PIP_INDEX_URL  another package index (a mirror), also build stage only.
#
# At run time: configuration from ISSUER_CONFIG (default /etc/issuer/issuer.toml: mount the file
# there) and the ISSUER_* environment (README, "Configuration"). The root filesystem can be
# read-only: with the issuing key in AWS KMS or AWS Private CA nothing is written. Only file keys
# need the state directory /var/lib/issuer to be a volume (`ca init` writes the CA there; replicas
# read the keys from it). With --workers above 1, PROMETHEUS_MULTIPROC_DIR (/tmp/issuer-metrics)
# must be writable: a tmpfs.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Dependencies first, in their own layer: a change to the source does not download them again.
COPY pyproject.toml ./
RUN set -eu; \
    [ -n "${PIP_CERT}" ] || unset PIP_CERT; \
    [ -n "${PIP_INDEX_URL}" ] || unset PIP_INDEX_URL; \
    python3 -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
sys.stdout.write("\n".join(p["dependencies"] + p["optional-dependencies"]["server"]) + "\n")' > requirements.txt; \
    python3 -m venv /opt/issuer; \
    /opt/issuer/bin/python -m pip install --upgrade pip; \
    /opt/issuer/bin/python -m pip install --only-binary=:all: -r requirements.txt

# Then the project as a wheel (setuptools comes into pip's isolated build environment only),
# installed without touching the dependencies above; pip itself leaves the runtime's venv.
COPY README.md LICENSE ./
COPY ca ./ca
COPY clients ./clients
COPY issuer ./issuer
COPY migrations ./migrations
RUN set -eu; \
    [ -n "${PIP_CERT}" ] || unset PIP_CERT; \
    [ -n "${PIP_INDEX_URL}" ] || unset PIP_INDEX_URL; \
    /opt/issuer/bin/python -m pip wheel --no-deps --wheel-dir /wheels .; \
    /opt/issuer/bin/python -m pip install --no-deps /wheels/aws_machine_issuer-*.whl; \
    /opt/issuer/bin/python -m pip check; \
    /opt/issuer/bin/python -m pip uninstall --yes --quiet setuptools wheel pip; \
    /opt/issuer/bin/issuer --help > /dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="aws-machine-issuer" \
      org.opencontainers.image.description="Machine identity and mutual-TLS client certificates for AWS workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid (10001) so volume ownership and Kubernetes/ECS `user` settings can name it.
RUN set -eu; \
    groupadd --system --gid 10001 issuer; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/issuer --no-create-home \
        --shell /usr/sbin/nologin issuer; \
    install -d -o 10001 -g 10001 -m 0700 /var/lib/issuer; \
    install -d -m 0755 /etc/issuer
COPY --from=build /opt/issuer /opt/issuer
ENV PATH=/opt/issuer/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ISSUER_CONFIG=/etc/issuer/issuer.toml \
    ISSUER_STATE_DIR=/var/lib/issuer \
    PROMETHEUS_MULTIPROC_DIR=/tmp/issuer-metrics
USER 10001:10001
WORKDIR /var/lib/issuer
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["issuer"]
# One worker per CPU is `issuer serve`'s own default on Postgres (--workers overrides it).
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
