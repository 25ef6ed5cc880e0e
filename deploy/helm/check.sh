#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/strata), the Grafana dashboard
# (deploy/grafana/strata-dashboard.json) and the example CI pipelines
# (docs/ci/*.yml) with real tools:
#
#   - helm v3.22.0, built from its Go module on first use and cached in
#     ${STRATA_CACHE:-/var/cache/strata}/helm/helm (about 3 minutes cold;
#     no prebuilt binary is downloaded);
#   - kubernetes-validate (PyPI), which ships the Kubernetes JSON schemas,
#     in a venv in ${STRATA_CACHE:-/var/cache/strata}/kubernetes-validate.
#
# Then, for the default values, ci/production-values.yaml and a few more
# value sets that reach the chart's other branches: `helm lint --strict`,
# `helm template`, `kubernetes-validate --strict` of every rendered object
# against the oldest and newest Kubernetes the chart supports, and the
# chart's own rules (no API token in any pod, resources on every container,
# probes on the health endpoints, a locked-down scheduler). Value sets that
# must be refused are refused with their message. Every value in
# values.yaml is in the chart README's table. The dashboard parses and
# queries only the metrics the binaries register (names read from
# scheduler/src/metrics.rs and worker/src/agent/stats.rs).
#
#   bash deploy/helm/check.sh
#
# Exits non-zero with a message naming what failed.
set -euo pipefail

readonly HELM_VERSION=v3.22.0
readonly HELM_MODULE=helm.sh/helm/v3
readonly KUBERNETES_VALIDATE_VERSION=1.37.0
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
readonly KUBE_VERSIONS=(1.30.0 1.37.0)
readonly CACHE="${STRATA_CACHE:-/var/cache/strata}"
readonly HELM_DIR="${CACHE}/helm"
readonly HELM="${HELM_DIR}/helm"
readonly KV_VENV="${CACHE}/kubernetes-validate"
readonly KV="${KV_VENV}/bin/kubernetes-validate"
readonly KV_PYTHON="${KV_VENV}/bin/python"


HERE="$(cd "$(dirname "$0")" && pwd)"
readonly HERE
readonly CHART="${HERE}/strata"
ROOT="$(cd "${HERE}/../.." && pwd)"
readonly ROOT
readonly DASHBOARD="${ROOT}/deploy/grafana/strata-dashboard.json"
# Where strata-scheduler and strata-worker register their metrics: the
# dashboard may query what these name and nothing else. Read from the code
# rather than kept here, so the list cannot drift from what the binaries
# export (tests/tests/metrics.rs checks the live endpoints).
readonly METRIC_SOURCES=("${ROOT}/scheduler/src/metrics.rs" "${ROOT}/worker/src/agent/stats.rs")

log() {
    printf 'check.sh: %s\n' "$*" >&2
}

die() {
    log "FAILED: $*"
    exit 1
}

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        die "Go is needed to build helm: install it (https://go.dev/dl) or put it on PATH"
    fi
}

# True when the cached helm was built from the pinned module version (a
# plain `go install` stamps no release version into `helm version`, so ask
# the binary's build info instead).
helm_installed() {
    [[ -x "$HELM" ]] || return 1
    local go
    go="$(find_go)"
    "$go" version -m "$HELM" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+${HELM_MODULE}[[:space:]]+${HELM_VERSION}[[:space:]]"
}

install_helm() {
    mkdir -p "$HELM_DIR"
    # Concurrent runs: one builds, the others wait and find it in place.
    exec 8>"${HELM_DIR}.lock"
    flock 8
    if helm_installed; then
        return
    fi
    local go scratch started
    go="$(find_go)"
    scratch="$(mktemp -d)"
    started=$SECONDS
    log "building helm ${HELM_VERSION} from its Go module with $("$go" version) (about 3 minutes)"
    (
        # Outside any module, so go install resolves helm's own go.mod.
        cd "$scratch"
        # Use this Go even if the module asks for a newer toolchain:
        # fetching one would be a download of prebuilt binaries.
        GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="${scratch}/bin" \
            "$go" install "${HELM_MODULE}/cmd/helm@${HELM_VERSION}"
    ) || { rm -rf "$scratch"; die "go install ${HELM_MODULE}/cmd/helm@${HELM_VERSION} failed"; }
    # Moved into place only once built, so a half-finished build is never
    # taken for a cached one.
    mv -f "${scratch}/bin/helm" "$HELM"
    rm -rf "$scratch"
    helm_installed || die "built ${HELM} but its build info does not say ${HELM_MODULE} ${HELM_VERSION}"
    log "built helm ${HELM_VERSION} in $((SECONDS - started)) s: ${HELM}"
}

kv_installed() {
    [[ -x "$KV" && -f "${KV_VENV}/.installed-${KUBERNETES_VALIDATE_VERSION}" ]]
}

install_kubernetes_validate() {
    mkdir -p "$CACHE"
    exec 7>"${KV_VENV}.lock"
    flock 7
    if kv_installed; then
        return
    fi
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "python3 has no venv/ensurepip: installing python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }; then
            die "could not install python3-venv (apt-get install -y python3-venv)"
        fi
    fi
    log "installing kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} into ${KV_VENV}"
    rm -rf "$KV_VENV"
    python3 -m venv "$KV_VENV" || die "python3 -m venv ${KV_VENV} failed"
    "${KV_VENV}/bin/pip" install --disable-pip-version-check -q \
        "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
        || die "pip install kubernetes-validate==${KUBERNETES_VALIDATE_VERSION} failed"
    # venvs are not relocatable, so it is built in place and marked done last.
    touch "${KV_VENV}/.installed-${KUBERNETES_VALIDATE_VERSION}"
}

# The value sets the chart is rendered with: name, then helm arguments.
# "crds" enables the objects whose kinds come from CRDs (KEDA, Prometheus
# Operator): the plain Kubernetes schemas do not know them, so only those
# kinds may go unvalidated there.
readonly CRD_KINDS='ScaledObject|ServiceMonitor'
variant_args() {
    case "$1" in
        default) ;;
        production) echo "-f ${CHART}/ci/production-values.yaml" ;;
        crds)
            echo "-f ${CHART}/ci/production-values.yaml --set autoscaling.keda.enabled=true" \
                "--set metrics.serviceMonitor.enabled=true"
            ;;
        minimal)
            # No auth, no Redis, no volumes, no NetworkPolicies or service
            # accounts of the chart's own: the smallest farm.
            echo "--set auth.enabled=false --set redis.mode=none" \
                "--set scheduler.persistence.enabled=false --set worker.persistence.enabled=false" \
                "--set networkPolicy.enabled=false --set metrics.podAnnotations=false" \
                "--set scheduler.serviceAccount.create=false --set worker.serviceAccount.create=false" \
                "--set worker.podDisruptionBudget.enabled=false"
            ;;
        from-values)
            # Secrets created from values, S3-compatible endpoint, external
            # Redis URL, bundled HPA without a selector, open worker egress.
            echo "--set auth.clientTokens.tokens.team-a=tokenA --set auth.clientTokens.tokens.team-b=tokenB" \
                "--set auth.workerTokens.tokens.worker=tokenW --set auth.workerTokens.tokens.old=tokenO" \
                "--set s3.enabled=true --set s3.bucket=cache --set s3.prefix=ci/" \
                "--set s3.endpoint=http://minio.minio.svc:9000 --set s3.pathStyle=true --set s3.region=us-east-1" \
                "--set s3.credentials.accessKeyId=AK --set s3.credentials.secretAccessKey=SK" \
                "--set redis.mode=external --set redis.external.url=redis://:pw@redis:6379/0" \
                "--set autoscaling.enabled=true --set networkPolicy.worker.restrictEgress=false" \
                "--set scheduler.persistence.existingClaim=strata-state" \
                "--set scheduler.cacheShare.team-b={team-a} --set scheduler.insecureRegistries={registry.local:5000}" \
                "--set worker.labels.pool=general --set tls.enabled=true --set tls.existingSecret=strata-tls"
            ;;
        redis-persistent)
            echo "--set redis.bundled.persistence.enabled=true --set redis.bundled.maxmemory=512mb" \
                "--set redis.bundled.auth.existingSecret=redis-pw --set scheduler.service.type=LoadBalancer" \
                "--set scheduler.service.loadBalancerSourceRanges={10.0.0.0/8}"
            ;;
        *) die "unknown value set $1" ;;
    esac
}
readonly VARIANTS=(default production crds minimal from-values redis-persistent)

# Value sets the chart must refuse, each with a piece of its message.
readonly REFUSED=(
    "--set tls.enabled=true|tls.enabled needs tls.existingSecret"
    "--set tls.existingSecret=x --set tls.workerMTLS.enabled=true --set tls.workerMTLS.existingSecret=y|tls.workerMTLS.enabled needs tls.enabled"
    "--set redis.mode=sentinel|redis.mode must be bundled, external or none"
    "--set redis.mode=external|redis.mode=external needs redis.external.existingSecret"
    "--set s3.enabled=true|s3.enabled needs s3.bucket"
    "--set scheduler.replicas=2|scheduler.replicas must be 1, not 2"
    "--set scheduler.replicas=2 --set scheduler.persistence.enabled=false|scheduler.replicas must be 1, not 2"
    "--set auth.workerTokens.tokens.a=b|auth.workerTokens.tokens has no key"
)

check_chart() {
    local out="$1" variant args rendered report failures=0
    local kube_args=()
    for v in "${KUBE_VERSIONS[@]}"; do kube_args+=(-k "$v"); done
    for variant in "${VARIANTS[@]}"; do
        read -r -a args <<<"$(variant_args "$variant")"
        log "[$variant] helm lint --strict"
        if ! "$HELM" lint --strict --kube-version "${KUBE_VERSIONS[0]}" "$CHART" "${args[@]}" >"${out}/${variant}.lint" 2>&1; then
            cat "${out}/${variant}.lint" >&2
            die "[$variant] helm lint --strict found problems"
        fi
        if grep -E '^\[(WARNING|ERROR)\]' "${out}/${variant}.lint" >&2; then
            die "[$variant] helm lint reported warnings"
        fi
        rendered="${out}/${variant}.yaml"
        log "[$variant] helm template"
        "$HELM" template strata "$CHART" --namespace strata --kube-version "${KUBE_VERSIONS[0]}" \
            "${args[@]}" >"$rendered" 2>"${out}/${variant}.template.err" \
            || { cat "${out}/${variant}.template.err" >&2; die "[$variant] helm template failed"; }
        log "[$variant] kubernetes-validate --strict (Kubernetes ${KUBE_VERSIONS[*]}): $(grep -c '^kind:' "$rendered") objects"
        report="${out}/${variant}.validate"
        if ! "$KV" --strict --quiet "${kube_args[@]}" "$rendered" >"$report" 2>&1; then
            cat "$report" >&2
            die "[$variant] rendered manifests do not validate against the Kubernetes schemas"
        fi
        # kubernetes-validate only warns about a kind it has no schema for;
        # a mistyped kind or apiVersion must fail here.
        local unknown
        if [[ "$variant" == crds ]]; then
            unknown="$(grep -v -E "Couldn't find schema for kind (${CRD_KINDS}) " "$report" || true)"
        else
            unknown="$(cat "$report")"
        fi
        if [[ -n "$unknown" ]]; then
            printf '%s\n' "$unknown" >&2
            die "[$variant] kubernetes-validate could not check every object"
        fi
        "$KV_PYTHON" - "$rendered" "$variant" <<'EOF' || failures=$((failures + 1))
# The chart's own rules, on the rendered objects.
import sys
import yaml

path, variant = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
problems = []
pods = 0
for d in docs:
    if d["kind"] not in ("Deployment", "StatefulSet"):
        continue
    pods += 1
    name = f'{d["kind"]}/{d["metadata"]["name"]}'
    spec = d["spec"]["template"]["spec"]
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken must be false")
    for c in spec["containers"]:
        where = f"{name} container {c['name']}"
        res = c.get("resources", {})
        for kind in ("cpu", "memory"):
            if kind not in res.get("requests", {}):
                problems.append(f"{where}: no {kind} request")
        if "memory" not in res.get("limits", {}):
            problems.append(f"{where}: no memory limit")
        if c["name"] in ("scheduler", "worker"):
            for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                                 ("startupProbe", "/healthz")):
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                if got != path_:
                    problems.append(f"{where}: {probe} should GET {path_}, not {got}")
        if c["name"] == "scheduler":
            sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
            if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
                problems.append(f"{where}: must run as non-root uid 65532")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem must be read-only")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation must be off")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: must drop ALL capabilities")
if pods < 2:
    problems.append(f"only {pods} pod templates rendered (expected the scheduler and workers)")
for p in problems:
    print(f"check.sh: [{variant}] {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    done
    [[ "$failures" -eq 0 ]] || die "rendered manifests break the chart's rules (above)"

    local refused pattern
    for refused in "${REFUSED[@]}"; do
        pattern="${refused#*|}"
        read -r -a args <<<"${refused%%|*}"
        if "$HELM" template strata "$CHART" --kube-version "${KUBE_VERSIONS[0]}" "${args[@]}" \
            >/dev/null 2>"${out}/refused.err"; then
            die "helm template accepted ${refused%%|*}; it must refuse it ($pattern)"
        fi
        grep -qF -- "$pattern" "${out}/refused.err" \
            || { cat "${out}/refused.err" >&2; die "helm template refused ${refused%%|*} without saying: $pattern"; }
    done
    log "refused ${#REFUSED[@]} broken value sets with their messages"
}

# Every value in values.yaml has a row in the chart README (a value may be
# documented as a whole object, e.g. scheduler.resources).
check_values_documented() {
    "$KV_PYTHON" - "${CHART}/values.yaml" "${CHART}/README.md" <<'EOF'
import re
import sys
import yaml

values = yaml.safe_load(open(sys.argv[1]))
documented = set(re.findall(r"^\|\s*`([A-Za-z0-9_.\-]+)`", open(sys.argv[2]).read(), re.M))
missing = []

def walk(node, path):
    if path and path in documented:
        return
    if isinstance(node, dict) and node:
        for k, v in node.items():
            walk(v, f"{path}.{k}" if path else k)
    else:
        missing.append(path)

def exists(path):
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True

walk(values, "")
stale = sorted(d for d in documented if not exists(d))
for m in missing:
    print(f"check.sh: values.yaml key {m} has no row in the chart README", file=sys.stderr)
for d in stale:
    print(f"check.sh: the chart README documents {d}, which values.yaml does not have", file=sys.stderr)
sys.exit(1 if missing or stale else 0)
EOF
}

check_dashboard() {
    local metrics=()
    mapfile -t metrics < <(grep -ohE '"strata_(scheduler|worker)_[a-z_]+"' "${METRIC_SOURCES[@]}" | tr -d '"' | sort -u)
    [[ ${#metrics[@]} -gt 0 ]] || die "no metric names found in ${METRIC_SOURCES[*]}"
    "$KV_PYTHON" - "$DASHBOARD" "${metrics[@]}" <<'EOF'
import json
import re
import sys

path = sys.argv[1]
allowed = {re.sub(r"_(bucket|sum|count)$", "", m) for m in sys.argv[2:]}
try:
    dash = json.load(open(path))
except (OSError, ValueError) as e:
    sys.exit(f"check.sh: {path} is not valid JSON: {e}")

exprs = []
def walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                exprs.append(v)
            else:
                walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
walk(dash.get("panels", []))
walk(dash.get("templating", {}))

used = set()
for e in exprs:
    for name in re.findall(r"strata_[a-z_]+", e):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name))
problems = [f"queries {m}, which the binaries do not export" for m in sorted(used - allowed)]
if not exprs:
    problems.append("has no queries")
variables = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
if not any(v.get("query") == "prometheus" for v in variables):
    problems.append("has no Prometheus datasource variable")
for p in problems:
    print(f"check.sh: dashboard {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check.sh: dashboard: {len(exprs)} queries over {len(used)} metrics, all exported"
      + (f"; not shown: {', '.join(sorted(allowed - used))}" if allowed - used else ""), file=sys.stderr)
EOF
}

check_ci_examples() {
    "$KV_PYTHON" - "${ROOT}/docs/ci/github-actions.yml" "${ROOT}/docs/ci/gitlab-ci.yml" <<'EOF'
import sys
import yaml

for path in sys.argv[1:]:
    try:
        doc = yaml.safe_load(open(path))
    except (OSError, yaml.YAMLError) as e:
        sys.exit(f"check.sh: {path} is not valid YAML: {e}")
    if not isinstance(doc, dict) or not doc:
        sys.exit(f"check.sh: {path} is not a pipeline (a YAML mapping)")
EOF
}

main() {
    local started=$SECONDS
    install_helm
    install_kubernetes_validate
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    log "helm: ${HELM} ($("$HELM" version --short 2>/dev/null)), kubernetes-validate $("$KV" --version)"
    check_chart "$WORK"
    check_values_documented || die "values.yaml and the table in ${CHART}/README.md disagree"
    check_dashboard || die "${DASHBOARD} queries something the binaries do not export"
    check_ci_examples || die "an example CI pipeline in docs/ci is not valid YAML"
    log "ok: chart (${#VARIANTS[@]} value sets), values documented, dashboard, CI examples in $((SECONDS - started)) s"
}

main "$@"
