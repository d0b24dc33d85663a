"""Other switches of the chart render objects valid for Kubernetes 1.30 and keep the rules.

ci/chart-check.sh validates the default and production renders with the kubernetes-validate CLI;
these renders (features turned off, other options) go through its Python API.
"""

import kubernetes_validate
import pytest
import yaml

from conftest import helm_template

VARIANTS = {
    "no-autoscaling": ["--set", "components.chat.autoscaling.enabled=false",
                       "--set", "components.auth.autoscaling.enabled=false"],
    "no-network-policy": ["--set", "networkPolicy.enabled=false"],
    "no-ingress": ["--set", "ingress.enabled=false"],
    "other-ingress-controller": ["--set", "ingress.className=traefik", "--set", "ingress.nginxAnnotations=false",
                                 "--set", "ingress.host="],
    "no-persistence": ["--set", "postgresql.persistence.enabled=false"],
    "no-service-account": ["--set", "serviceAccount.create=false"],
    "no-pdb-no-spread": ["--set", "components.group.podDisruptionBudget.enabled=false",
                         "--set", "topologySpread.enabled=false"],
    "ipv6-and-existing-keys": ["--set", "listenHost=[::]",
                               "--set", "auth.signingKey.existingSecret=keys",
                               "--set", "serviceSecret.existingSecret=keys"],
    "renamed": ["--set", "fullnameOverride=im"],
    "no-scrape-annotations": ["--set", "gateway.metricsScrapeAnnotations=false",
                              "--set", "serviceMetrics.scrapeAnnotations=false"],
    "pod-labels": ["--set", "podLabels.team=chat", "--set", "podLabels.tier=backend"],
    "min-equals-max": ["--set", "components.chat.autoscaling.minReplicas=10"],
    "no-tests": ["--set", "tests.enabled=false"],
    "pod-monitor": ["--set", "gateway.podMonitor.enabled=true", "--set", "gateway.metricsScrapeAnnotations=false",
                    "--set", "gateway.podMonitor.labels.release=kube-prometheus-stack",
                    "--set", "serviceMetrics.podMonitor.enabled=true",
                    "--set", "serviceMetrics.scrapeAnnotations=false",
                    "--set", "serviceMetrics.podMonitor.labels.release=kube-prometheus-stack",
                    "--set", "networkPolicy.metricsScrapers[0].podSelector.matchLabels.app=prometheus"],
    "monitoring": ["--set", "monitoring.dashboards.enabled=true", "--set", "monitoring.rules.enabled=true"],
    "traces": ["--set", "otel.endpoint=http://otel-collector.observability:4317",
               "--set", "otel.collector.to[0].namespaceSelector.matchLabels.team=observability"],
    "nats": ["--set", "bus.kind=nats", "--set", "bus.nats.url=nats://nats.nats:4222",
             "--set", "bus.nats.credentials.existingSecret=chat-nats",
             "--set", "bus.nats.to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=nats"],
}
# Custom resources kubernetes-validate has no schema for (the Prometheus Operator's CRDs): not
# validated against a schema; their own tests check their shape (test_manifests.py, and promtool
# on the rules' file in ci/chart-check.sh).
CUSTOM_KINDS = {"monitoring.coreos.com/v1": {"PodMonitor", "PrometheusRule"}}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_variant_renders_valid_objects(name):
    result = helm_template(*VARIANTS[name])
    assert result.returncode == 0, result.stderr

    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS.get(doc["apiVersion"], set()):
            continue
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    assert len([d for d in docs if d["kind"] == "Pod"]) == (0 if name == "no-tests" else 1)
    assert len([d for d in docs if d["kind"] == "PodMonitor"]) == (4 if name == "pod-monitor" else 0)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deployments) == 4
    for dep in deployments:
        scaled = any(h["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
                     for h in docs if h["kind"] == "HorizontalPodAutoscaler")
        assert ("replicas" in dep["spec"]) != scaled, dep["metadata"]["name"]
        for container in dep["spec"]["template"]["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert len([d for d in docs if d["kind"] == "Ingress"]) == (0 if name == "no-ingress" else 1)
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        # Extra labels sit beside the chart's, and the selector still matches the pods.
        assert all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items())
        if name == "pod-labels":
            assert labels["team"] == "chat" and labels["tier"] == "backend"



def test_the_pod_monitors_scrape_each_components_metrics_port():
    result = helm_template(*VARIANTS["pod-monitor"])
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]

    assert len(monitors) == len(deployments) == 4
    for deployment in deployments:
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        monitor = [m for m in monitors if m["spec"]["selector"] == deployment["spec"]["selector"]]
        assert len(monitor) == 1, component
        assert monitor[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
        endpoints = monitor[0]["spec"]["podMetricsEndpoints"]
        assert [(e["port"], e["path"]) for e in endpoints] == [("metrics", "/metrics")], component
        assert "metrics" in ports, component


def test_traces_are_exported_by_every_component_to_the_collector_only():
    result = helm_template(*VARIANTS["traces"])
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    for dep in [d for d in docs if d["kind"] == "Deployment"]:
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        env = {e["name"]: e.get("value") for c in dep["spec"]["template"]["spec"]["containers"]
               for e in c.get("env", [])}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert env["OTEL_SERVICE_NAME"] == component
    for policy in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        component = policy["metadata"]["labels"]["app.kubernetes.io/component"]
        to_collector = [r for r in policy["spec"].get("egress") or []
                        if r["ports"] == [{"port": 4317, "protocol": "TCP"}]]
        if component in ("postgresql", "migrate", "test"):
            assert not to_collector, component
        else:
            assert [r["to"] for r in to_collector] == [
                [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]], component


def test_an_endpoint_without_collector_peers_is_refused_while_policies_are_on():
    result = helm_template("--set", "otel.endpoint=http://collector:4317")

    assert result.returncode != 0
    assert "otel.collector.to is empty" in result.stderr
    assert helm_template("--set", "otel.endpoint=http://collector:4317",
                         "--set", "networkPolicy.enabled=false").returncode == 0


def test_the_nats_bus_reaches_chat_with_its_url_credentials_and_an_egress_rule():
    result = helm_template(*VARIANTS["nats"])
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    for dep in [d for d in docs if d["kind"] == "Deployment"]:
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = dep["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if component != "chat":
            assert not [name for name in env if "NATS" in name or name.endswith("_BUS")], component
            continue
        assert env["CHAT_BUS"] == "nats"
        assert env["CHAT_NATS_URL"] == "nats://nats.nats:4222"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert env["CHAT_NATS_CREDENTIALS_FILE"] == mounts["nats-credentials"] + "/nats.creds"
        secret = volumes["nats-credentials"]["secret"]
        assert secret["secretName"] == "chat-nats"
        assert secret["items"] == [{"key": "nats.creds", "path": "nats.creds"}]
    for policy in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        component = policy["metadata"]["labels"]["app.kubernetes.io/component"]
        to_nats = [r for r in policy["spec"].get("egress") or []
                   if r["ports"] == [{"port": 4222, "protocol": "TCP"}]]
        if component == "chat":
            assert [r["to"] for r in to_nats] == [
                [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nats"}}}]]
        else:
            assert not to_nats, component


def test_the_postgres_bus_is_the_default_and_sets_no_nats_settings():
    result = helm_template()
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    chat = [d for d in docs if d["kind"] == "Deployment"
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == "chat"][0]
    env = {e["name"]: e.get("value") for e in chat["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert env["CHAT_BUS"] == "postgres"
    assert not [name for name in env if name.startswith("CHAT_NATS_")]


def test_nats_without_credentials_mounts_nothing_and_policies_off_need_no_peers():
    result = helm_template("--set", "bus.kind=nats", "--set", "bus.nats.url=nats://nats:4222",
                           "--set", "networkPolicy.enabled=false")
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    chat = [d for d in docs if d["kind"] == "Deployment"
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == "chat"][0]
    spec = chat["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}

    assert env["CHAT_NATS_URL"] == "nats://nats:4222"
    assert "CHAT_NATS_CREDENTIALS_FILE" not in env
    assert "nats-credentials" not in {v["name"] for v in spec["volumes"]}
