#!/bin/bash
# `make deploy-check`: every static validation of deploy/ (no container daemon and no container
# or Terraform registry is needed). Tools come from .venv-deploy (deploy/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv-deploy/bin
chart=deploy/helm/bonito
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export TF_CLI_CONFIG_FILE=/dev/null CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
step() { echo "-- $*"; }

step "image requirement lists name only packages of requirements.txt (versions: constraints.txt)"
names() { grep -vE '^\s*(#|-|$)' "$1" | sed -E 's/\s*#.*//; s/\[.*\]//; s/[=<>!~].*//' | tr 'A-Z_' 'a-z-'; }
for list in deploy/requirements-platform.txt deploy/requirements-agent.txt; do
  for name in $(names "$list"); do
    names requirements.txt | grep -qx "$name" || fail "$list names $name, which requirements.txt does not"
  done
done
for name in $(names deploy/requirements-agent.txt); do
  case "$name" in django*|python3-saml|xmlsec|lxml|channels*|celery|psycopg) fail "the agent image must not carry $name";; esac
done

step "hadolint deploy/Dockerfile"
"$bin/hadolint" --failure-threshold warning deploy/Dockerfile || fail "hadolint"

step "docker-compose config (platform.yaml, agent.yaml)"
platform_env=(SECRET_KEY=ci-not-a-secret KEY_HASH_SECRET=ci-not-a-secret-either POSTGRES_PASSWORD=ci REDIS_PASSWORD=ci
  ALLOWED_HOSTS=bonito.example.com PUBLIC_BASE_URL=https://bonito.example.com)
env -i PATH="$PATH" "${platform_env[@]}" "$bin/docker-compose" -f deploy/compose/platform.yaml config -q || fail "platform.yaml"
env -i PATH="$PATH" BONITO_CONTROL_PLANE=https://bonito.example.com BONITO_ORG_TOKEN=bt-ci \
  "$bin/docker-compose" -f deploy/compose/agent.yaml config -q || fail "agent.yaml"
# A missing secret stops `up` with its name instead of starting with an empty one.
for missing in SECRET_KEY KEY_HASH_SECRET POSTGRES_PASSWORD REDIS_PASSWORD; do
  kept=(); for kv in "${platform_env[@]}"; do [[ $kv == "$missing="* ]] || kept+=("$kv"); done
  if env -i PATH="$PATH" "${kept[@]}" "$bin/docker-compose" -f deploy/compose/platform.yaml config -q 2>"$out/err"; then
    fail "platform.yaml starts without $missing"
  fi
  grep -q "$missing" "$out/err" || fail "platform.yaml's error for a missing $missing does not name it"
done
env -i PATH="$PATH" BONITO_CONTROL_PLANE=https://bonito.example.com "$bin/docker-compose" \
  -f deploy/compose/agent.yaml config -q 2>/dev/null && fail "agent.yaml starts without BONITO_ORG_TOKEN"
# The Compose files carry no secret: every credential is an interpolated variable.
grep -nE '(bt|bn|rt)-[A-Za-z0-9]{8,}|PASSWORD: [^$]' deploy/compose/*.yaml && fail "a literal secret in deploy/compose"

step "helm lint + template (ci/*-values.yaml), kubernetes-validate, no secret rendered"
for values in "$chart"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  "$bin/helm" lint --strict "$chart" -f "$values" >"$out/lint" 2>&1 || { cat "$out/lint"; fail "helm lint $name"; }
  "$bin/helm" template ci "$chart" --namespace bonito -f "$values" >"$out/$name.yaml" || { fail "helm template $name"; continue; }
  for k8s in 1.27.0 1.33.0; do
    "$bin/kubernetes-validate" --strict --quiet --no-warn -k "$k8s" "$out/$name.yaml" || fail "kubernetes-validate $name on $k8s"
  done
  grep -q '^kind: Secret' "$out/$name.yaml" && fail "$name renders a Secret (secrets are referenced, never created)"
  grep -qE 'bt-[A-Za-z0-9]' "$out/$name.yaml" && fail "$name renders a token"
  cp "$out/$name.yaml" "$out/rendered-$name.yaml"
done
# Values the schema (or the templates) must refuse: each file in ci/bad/ fails to render.
for values in "$chart"/ci/bad/*.yaml; do
  if "$bin/helm" template ci "$chart" -f "$values" >/dev/null 2>&1; then
    fail "helm accepted ci/bad/$(basename "$values")"
  fi
done

step "terraform fmt -check"
terraform fmt -check -recursive -diff deploy/terraform || fail "terraform fmt"
# terraform validate needs the providers, which come only from the Terraform registry (not
# reachable here); try it, say so when it cannot run.
for module in deploy/terraform/*/; do
  if timeout 60 terraform -chdir="$module" init -backend=false -input=false -no-color >"$out/init" 2>&1; then
    terraform -chdir="$module" validate -no-color || fail "terraform validate $module"
  else
    echo "   terraform validate $module: skipped, providers cannot be downloaded ($(grep -m1 -oE 'Failed to query.*|could not connect.*|no such host' "$out/init" || echo 'init failed'))"
  fi
  rm -rf "$module/.terraform" "$module/.terraform.lock.hcl"
done

step "checkov (Terraform modules, Dockerfile, rendered manifests)"
mkdir -p "$out/k8s" && mv "$out"/rendered-*.yaml "$out/k8s/"
"$bin/checkov" --quiet --compact --skip-download -o cli \
  -d deploy/terraform --framework terraform || fail "checkov terraform"
"$bin/checkov" --quiet --compact --skip-download -o cli \
  -f deploy/Dockerfile --framework dockerfile || fail "checkov dockerfile"
"$bin/checkov" --quiet --compact --skip-download -o cli \
  -d "$out/k8s" --framework kubernetes || fail "checkov kubernetes"

step "snippets (deploy/snippets): placeholders, and the filled-in Compose one is valid"
for snippet in deploy/snippets/*; do
  grep -q '{{ control_plane_url }}' "$snippet" || fail "$snippet lacks {{ control_plane_url }}"
  grep -q '{{ org_token }}' "$snippet" || fail "$snippet lacks {{ org_token }}"
done
sed -e 's|{{ control_plane_url }}|https://bonito.example.com|g' -e 's|{{ org_token }}|bt-ci|g' \
  deploy/snippets/compose.yaml >"$out/compose.yaml"
env -i PATH="$PATH" "$bin/docker-compose" -f "$out/compose.yaml" config -q || fail "snippets/compose.yaml"
terraform fmt -check deploy/snippets/terraform.tf || fail "snippets/terraform.tf is not terraform-formatted"
# Copied as shown, it must validate: the module replaced by a stub with its real variables (no
# provider is needed, so this runs without the Terraform registry).
stub="$out/snippet/bonito/deploy/terraform/aws-ecs"
mkdir -p "$stub"
cp deploy/terraform/aws-ecs/variables.tf "$stub/"
echo 'output "internal_url" { value = "http://stub" }' >"$stub/outputs.tf"
sed -e 's|{{ control_plane_url }}|https://bonito.example.com|g' -e 's|{{ org_token }}|bt-ci|g' \
  deploy/snippets/terraform.tf >"$out/snippet/main.tf"
if terraform -chdir="$out/snippet" init -backend=false -input=false -no-color >"$out/init" 2>&1; then
  terraform -chdir="$out/snippet" validate -no-color || fail "snippets/terraform.tf does not validate"
else
  cat "$out/init"; fail "terraform init of the snippet"
fi
bash -n deploy/snippets/helm.sh || fail "snippets/helm.sh"
# Run as shown (kubectl a no-op, helm install as helm template): the chart takes its values.
sed -e 's|{{ control_plane_url }}|https://bonito.example.com|g' -e 's|{{ org_token }}|bt-ci|g' \
  deploy/snippets/helm.sh >"$out/helm.sh"
(
  kubectl() { :; }
  helm() { shift; "$bin/helm" template "$@" >/dev/null; }
  set -e
  # shellcheck disable=SC1091
  . "$out/helm.sh"
) || fail "snippets/helm.sh does not install the chart as shown"

if [ "$failed" -ne 0 ]; then
  echo "deploy-check FAILED" >&2
  exit 1
fi
echo "deploy-check passed"
