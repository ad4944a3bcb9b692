#!/usr/bin/env bash
# Runs a study on an existing Ray cluster through the Ray Jobs API.
#
#   RAY_ADDRESS=http://127.0.0.1:8265 \
#   ABLATE_STORAGE=s3://my-bucket/studies \
#   ABLATE_TRACKING_URI=http://mlflow:5000 \
#   runners/ray_job_submit.sh search_spaces/como.yaml [more `ablate run` options]
#
# Run it from the repository root: `--working-dir .` uploads this checkout (spec files and
# code) to every node, where it takes precedence over an installed ablate; the cluster image
# must hold ablate's dependencies (`pip install ablate` or `pip install -e .` in the image).
# The job's entrypoint, the study driver, runs on the head node: that is the only process
# that talks to MLflow, so ABLATE_TRACKING_URI must be reachable from the head, not from
# the workers. ABLATE_STORAGE must be shared by every node (S3/GCS URI or an NFS path).
#
# Resume: run the same command again. The driver restores the Tune experiment from
# ABLATE_STORAGE and finds each trial's MLflow run by its tag, so finished trials are kept,
# interrupted ones continue from their last checkpoint, and no run is duplicated.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 SPEC [ablate run options...]" >&2
  exit 2
fi
spec=$1
shift
: "${RAY_ADDRESS:?set RAY_ADDRESS to the job server of the cluster, e.g. http://127.0.0.1:8265 (ray dashboard cluster.yaml forwards it)}"
: "${ABLATE_STORAGE:?set ABLATE_STORAGE to storage every node shares, e.g. s3://bucket/studies or /shared/studies}"
: "${ABLATE_TRACKING_URI:?set ABLATE_TRACKING_URI to an MLflow tracking server the head node reaches, e.g. http://mlflow:5000}"
if [[ ! -f $spec ]]; then
  echo "error: $spec: no such study file (paths are relative to the repository root)" >&2
  exit 1
fi

# Local study state and tracking files stay behind; the upload limit is a few hundred MB.
runtime_env='{"excludes": [".git", "runs", "mlruns", "mlartifacts", "mlflow.db", "out", "dashboards/*/", "*.parquet", "*.arrow"]}'

exec ray job submit --address "$RAY_ADDRESS" --working-dir . \
  --runtime-env-json "$runtime_env" \
  -- ablate run "$spec" --storage "$ABLATE_STORAGE" --tracking-uri "$ABLATE_TRACKING_URI" "$@"
