# The image every Argo task runs in (argo.image in mlops.yaml) and the serving
# pods run (deploy.image): the project's pinned dependencies, git to clone the
# commit a workflow runs, and a non-root user whose uid matches runAsUser in the
# generated manifests (10001).
#   docker build -t <project name>:latest .
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install --yes --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 mlops \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin mlops

WORKDIR /opt/mlops
COPY pyproject.toml constraints.txt README.md ./
COPY runner ./runner
COPY stages ./stages
COPY schema ./schema
# A serving pod has no checkout: `mlops serve -f /opt/mlops/mlops.yaml` reads
# the registered model's name, the server settings and the estimator allow-list
# from this copy, and fetches the version its manifest names from MLflow.
COPY mlops.yaml ./
# This repository's own image (template mode: Argo tasks run the stages/ of
# the commit they clone). A team's repository builds mlops.Dockerfile instead,
# which `mlops compile` writes from Dockerfile.team.
RUN pip install --no-cache-dir -c constraints.txt -e . \
    && mkdir /workspace && chown 10001:10001 /workspace

ENV DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/workspace
USER 10001:10001
WORKDIR /workspace
