# syntax=docker/dockerfile:1
#
# The defacto image: the `defacto` command line (worker, dashboard, produce, simulate, ...).
#
#   docker build -t defacto:0.1.0 .
#   docker run --rm defacto:0.1.0 --help
#   docker run --rm defacto:0.1.0 worker --help
#
# deploy/compose.yaml builds and runs it; deploy/k8s/ runs it on Kubernetes (see deploy/README.md).
# Only pyproject.toml, README.md and the Python packages are sent to the build (.dockerignore).

# Build stage: wheels of the project and of its pinned dependencies. The compiler is there for a
# dependency without a binary wheel for the target platform (e.g. on arm64); it does not reach
# the final image.
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY estimators/ estimators/
COPY stream/ stream/
RUN pip wheel --wheel-dir /wheels .

# Final stage: the wheels installed into the base Python, run as an unprivileged user.
FROM python:3.11.13-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEFACTO_DATADIR=/var/lib/defacto/faust
RUN groupadd --system --gid 10001 defacto \
 && useradd --system --uid 10001 --gid defacto --home-dir /var/lib/defacto --create-home \
        --shell /usr/sbin/nologin defacto
# versions are pinned by pyproject.toml; only the wheels built above are available (--no-index)
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels defacto \
 && defacto --help > /dev/null
USER 10001:10001
WORKDIR /var/lib/defacto
# 6066: worker /metrics, /healthz, /api (needs --web-host 0.0.0.0 to be reachable from outside
# the container); 8050: `defacto dashboard` (needs --host 0.0.0.0 likewise).
EXPOSE 6066 8050
ENTRYPOINT ["defacto"]
CMD ["--help"]
