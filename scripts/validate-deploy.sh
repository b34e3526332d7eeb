#!/usr/bin/env bash
# Check the files in deploy/: the Kubernetes manifests parse and hold what a
# relay needs (probes on /healthz, ports matching the relay's flags, one
# replica), the systemd unit passes `systemd-analyze verify`, and the image
# builds where a container engine is running. Says what it could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - deploy/k8s/relay.yaml <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
assert set(kinds) == {"Deployment", "Service"}, kinds.keys()
dep, svc = kinds["Deployment"], kinds["Service"]
assert dep["apiVersion"] == "apps/v1" and svc["apiVersion"] == "v1"
spec = dep["spec"]
assert spec["replicas"] == 1, "both peers must reach one relay process"
labels = spec["template"]["metadata"]["labels"]
assert spec["selector"]["matchLabels"].items() <= labels.items()
assert svc["spec"]["selector"].items() <= labels.items()
(c,) = spec["template"]["spec"]["containers"]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert ports == {"relay": 9009, "metrics": 9100}, ports
for probe in ("readinessProbe", "livenessProbe"):
    assert c[probe]["httpGet"]["path"] == "/healthz" and c[probe]["httpGet"]["port"] == "metrics"
ann = spec["template"]["metadata"]["annotations"]
assert ann["prometheus.io/port"] == "9100" and ann["prometheus.io/path"] == "/metrics"
assert svc["spec"]["ports"][0]["targetPort"] == "relay"
grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
assert grace > 30, "longer than the relay's --shutdown-grace"
print("deploy/k8s/relay.yaml: ok (structure checked; no cluster to validate against)")
PY

if command -v systemd-analyze >/dev/null; then
    cargo build --release --quiet -p tallow
    unit=$(mktemp -d)/tallow-relay.service
    sed "s|/usr/local/bin/tallow|$PWD/target/release/tallow|" deploy/tallow-relay.service >"$unit"
    systemd-analyze verify "$unit"
    echo "deploy/tallow-relay.service: ok (systemd-analyze verify)"
else
    echo "deploy/tallow-relay.service: NOT checked (no systemd-analyze)"
fi

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker build -f deploy/Dockerfile -t tallow-relay .
    echo "deploy/Dockerfile: built"
else
    echo "deploy/Dockerfile: NOT built (no running container engine here)"
fi
