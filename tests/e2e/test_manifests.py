#!/usr/bin/env python3
"""The Kubernetes manifests of deploy/k8s, built and validated as a cluster operator would.

    pip install -r tests/e2e/requirements.txt   # kubernetes-validate; kustomize comes with kubectl
    ROSTER_BIN=target/debug/roster python tests/e2e/test_manifests.py

Every kustomization (the base and each overlay) is built with kustomize (`kubectl kustomize`,
or `kustomize build`), and every resource it renders passes PyPI `kubernetes-validate --strict`
for the oldest Kubernetes the manifests support and the newest the validator knows. The
ServiceMonitor (a Prometheus Operator CRD, whose schema the validator does not carry) is checked
by what makes it work: its selector finds the Service and its port is one of the Service's. Then
the parts must fit: Services, the PodDisruptionBudget and the NetworkPolicy select the server
pods, the HorizontalPodAutoscaler scales the Deployment, every container has limits and a
read-only root, the servers drain before SIGTERM and leave migrations to the Job, and every
ROSTER_ setting the manifests set is one `roster serve --help` lists. One PASS/FAIL line per
case, then `N passed, M failed`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_outside_clients import Runner, check  # noqa: E402 - the shared helpers live next to this file

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes the manifests are written for (preStop `sleep`, GA gRPC probes) and the
# newest the validator knows.
KUBERNETES_VERSIONS = ["1.30.0"]
CRD_KINDS = {"ServiceMonitor"}


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise AssertionError("no kustomize: install kubectl (kubectl kustomize) or kustomize")


def build(directory: Path) -> list[dict]:
    import yaml

    out = subprocess.run([*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120,
                         check=False)
    check(out.returncode == 0, f"kustomize {directory.relative_to(REPO)}: {out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc.get("kind") == kind]


def matches(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


def main() -> int:
    import kubernetes_validate

    kubernetes_versions = [*KUBERNETES_VERSIONS, kubernetes_validate.latest_version()]
    r = Runner()
    kustomizations = sorted(path.parent for path in K8S.rglob("kustomization.yaml"))
    rendered: dict[str, list[dict]] = {}

    def builds_and_validates(directory: Path):
        def case():
            docs = build(directory)
            check(docs, "nothing rendered")
            for doc in docs:
                name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
                if doc.get("kind") in CRD_KINDS:
                    continue
                for version in kubernetes_versions:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        raise AssertionError(f"{name} against {version}: {e.message} at {list(e.path)}") from e
                    except kubernetes_validate.SchemaNotFoundError as e:
                        raise AssertionError(f"{name}: no schema for Kubernetes {version}: {e}") from e
            rendered[str(directory.relative_to(K8S))] = docs

        return case

    def overlays_fit_together():
        check(any(name.startswith("overlays/") for name in rendered), f"no overlay built: {sorted(rendered)}")
        for name, docs in rendered.items():
            (deployment,) = by_kind(docs, "Deployment")
            pods = deployment["spec"]["template"]["metadata"]["labels"]
            check(matches(deployment["spec"]["selector"], pods), f"{name}: the Deployment selects not its pods")
            for kind in ["Service", "PodDisruptionBudget"]:
                for doc in by_kind(docs, kind):
                    selector = doc["spec"]["selector"]
                    selector = selector if "matchLabels" in selector else {"matchLabels": selector}
                    check(matches(selector, pods), f"{name}: {kind} {doc['metadata']['name']} selects no server")
            for policy in by_kind(docs, "NetworkPolicy"):
                check(matches(policy["spec"]["podSelector"], pods), f"{name}: the NetworkPolicy selects no server")
            for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
                target = hpa["spec"]["scaleTargetRef"]
                check((target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]),
                      f"{name}: the autoscaler scales {target}")
                check(hpa["spec"]["minReplicas"] >= 2, f"{name}: fewer than 2 replicas leave no room for a drain")
            (service,) = by_kind(docs, "Service")
            for monitor in by_kind(docs, "ServiceMonitor"):
                check(monitor["apiVersion"] == "monitoring.coreos.com/v1", f"{name}: {monitor['apiVersion']}")
                check(matches(monitor["spec"]["selector"], service["metadata"]["labels"]),
                      f"{name}: the ServiceMonitor's selector finds not the Service")
                ports = {port["name"] for port in service["spec"]["ports"]}
                for endpoint in monitor["spec"]["endpoints"]:
                    check(endpoint["port"] in ports, f"{name}: the ServiceMonitor scrapes port {endpoint['port']}, "
                                                     f"the Service has {ports}")
                    check(endpoint.get("path", "/metrics") == "/metrics", f"{name}: path {endpoint.get('path')}")

    def pods_are_hardened_and_drain():
        for name, docs in rendered.items():
            (deployment,) = by_kind(docs, "Deployment")
            spec = deployment["spec"]["template"]["spec"]
            check(spec.get("automountServiceAccountToken") is False, f"{name}: the pods get an API token")
            check(spec.get("topologySpreadConstraints"), f"{name}: no topology spread")
            grace = spec["terminationGracePeriodSeconds"]
            for job in by_kind(docs, "Job"):
                containers = job["spec"]["template"]["spec"]["containers"]
                check(any(c.get("args") == ["migrate"] for c in containers), f"{name}: the Job does not migrate")
            for container in spec["containers"] + [c for job in by_kind(docs, "Job")
                                                   for c in job["spec"]["template"]["spec"]["containers"]]:
                check(container.get("resources", {}).get("limits", {}).get("memory"),
                      f"{name}: {container['name']} has no memory limit")
                security = container.get("securityContext", {})
                check(security.get("readOnlyRootFilesystem") and security.get("allowPrivilegeEscalation") is False,
                      f"{name}: {container['name']} is not locked down: {security}")
            for container in spec["containers"]:
                sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                check(sleep > 0, f"{name}: {container['name']} gets SIGTERM while still in the endpoints")
                check(sleep + 20 <= grace, f"{name}: {sleep} s of preStop leaves too little of {grace} s to drain")
            roster = next(c for c in spec["containers"] if c["name"] == "roster")
            check({p["name"] for p in roster["ports"]} >= {"grpc", "metrics"}, f"{name}: ports {roster['ports']}")
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
                check("grpc" in roster.get(probe, {}), f"{name}: no gRPC {probe}")
            (config,) = by_kind(docs, "ConfigMap")
            check(config["data"].get("ROSTER_MIGRATE") == "false", f"{name}: the servers migrate themselves")
            check(config["data"].get("ROSTER_METRICS_LISTEN"), f"{name}: no metrics")
            check(config["data"].get("OTEL_EXPORTER_OTLP_ENDPOINT"), f"{name}: no OTLP endpoint")

    def every_setting_is_one_roster_knows():
        roster_bin = os.environ.get("ROSTER_BIN")
        check(roster_bin, "ROSTER_BIN must name the built roster binary")
        out = subprocess.run([roster_bin, "serve", "--help"], capture_output=True, text=True, timeout=30, check=False)
        check(out.returncode == 0, f"roster serve --help: {out.stderr}")
        for name, docs in rendered.items():
            names = set()
            for config in by_kind(docs, "ConfigMap"):
                names |= set(config["data"])
            for workload in by_kind(docs, "Deployment") + by_kind(docs, "Job"):
                for container in workload["spec"]["template"]["spec"]["containers"]:
                    names |= {env["name"] for env in container.get("env", [])}
            unknown = sorted(n for n in names if n.startswith("ROSTER_") and f"[env: {n}=" not in out.stdout)
            check(not unknown, f"{name}: settings roster does not have: {unknown}")

    for directory in kustomizations:
        r.case(f"kustomize builds {directory.relative_to(REPO)} and kubernetes-validate --strict passes it",
               builds_and_validates(directory))
    r.case("selectors, the autoscaler and the ServiceMonitor find what they are for", overlays_fit_together)
    r.case("pods are locked down, drain before SIGTERM, and leave migrations to the Job", pods_are_hardened_and_drain)
    r.case("every ROSTER_ setting in the manifests is one roster serve --help lists", every_setting_is_one_roster_knows)
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
