#!/usr/bin/env bash
# Check the files in deploy/: the Kubernetes manifests parse and hold what a
# relay fleet needs (three replicas, a headless Service of members read by
# --fleet dns:…, each replica advertising its pod IP, probes on /healthz,
# ports matching the relay's flags), the systemd unit passes `systemd-analyze verify`, and the image builds where a
# container engine is running. Says what it could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - deploy/k8s/relay.yaml <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
deps = [d for d in docs if d["kind"] == "Deployment"]
svcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
assert len(deps) == 1 and len(docs) == 1 + len(svcs), [d["kind"] for d in docs]
dep = deps[0]
assert set(svcs) == {"tallow-relay", "tallow-relay-members"}, svcs.keys()
public, members = svcs["tallow-relay"], svcs["tallow-relay-members"]
assert dep["apiVersion"] == "apps/v1" and all(s["apiVersion"] == "v1" for s in svcs.values())
spec = dep["spec"]
assert spec["replicas"] == 3, "a fleet of three"
labels = spec["template"]["metadata"]["labels"]
assert spec["selector"]["matchLabels"].items() <= labels.items()
for svc in svcs.values():
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "relay"
# The headless Service lists every replica, ready or not.
assert members["spec"]["clusterIP"] == "None"
assert members["spec"]["publishNotReadyAddresses"] is True
assert public["spec"]["type"] == "LoadBalancer"
assert public["spec"]["externalTrafficPolicy"] == "Local", "clients' own addresses for the limits"
(c,) = spec["template"]["spec"]["containers"]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert ports == {"relay": 9009, "metrics": 9100}, ports
args = c["args"]
fleet = args[args.index("--fleet") + 1]
assert fleet == "dns:tallow-relay-members.$(POD_NAMESPACE).svc.cluster.local:9009", fleet
assert args[args.index("--advertise") + 1] == "$(POD_IP):9009"
env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
assert env == {"POD_IP": "status.podIP", "POD_NAMESPACE": "metadata.namespace"}, env
for probe in ("readinessProbe", "livenessProbe"):
    assert c[probe]["httpGet"]["path"] == "/healthz" and c[probe]["httpGet"]["port"] == "metrics"
ann = spec["template"]["metadata"]["annotations"]
assert ann["prometheus.io/port"] == "9100" and ann["prometheus.io/path"] == "/metrics"
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
