"""The rules of the chart, checked on the rendered manifests of every values file."""

import base64
import json
import re
from urllib.parse import urlparse

import yaml

from conftest import REPO, Manifests, render_args, selects

SERVICES = ("auth", "chat", "group", "gateway")
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def env_of(container: dict) -> dict:
    return {entry["name"]: entry for entry in container.get("env", [])}


def deployment(manifests: Manifests, component: str) -> dict:
    found = [d for d in manifests.kind("Deployment") if manifests.component(d) == component]
    assert len(found) == 1, f"{component}: {len(found)} Deployments"
    return found[0]


def test_there_is_a_deployment_and_a_service_per_service(manifests):
    for component in SERVICES:
        pods = Manifests.pod_labels(deployment(manifests, component))
        services = [s for s in manifests.kind("Service")
                    if s["spec"].get("clusterIP") != "None"
                    and all(pods.get(k) == v for k, v in s["spec"]["selector"].items())]
        assert len(services) == 1, f"{component}: {len(services)} ClusterIP Services"


def test_only_the_gateway_has_an_ingress(manifests):
    ingresses = manifests.kind("Ingress")
    assert len(ingresses) == 1
    gateway_service = manifests.one("Service", "chat-gateway")
    backends = [path["backend"]["service"]["name"]
                for rule in ingresses[0]["spec"]["rules"] for path in rule["http"]["paths"]]
    assert backends and set(backends) == {gateway_service["metadata"]["name"]}
    assert "defaultBackend" not in ingresses[0]["spec"]
    # No other way in from outside either.
    for service in manifests.kind("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
    for workload in manifests.workloads():
        spec = Manifests.pod_spec(workload)
        assert not spec.get("hostNetwork"), workload["metadata"]["name"]
        for container in containers(spec):
            for port in container.get("ports", []):
                assert "hostPort" not in port, workload["metadata"]["name"]


def test_the_gateways_metrics_have_their_own_port_outside_its_service(manifests):
    container = deployment(manifests, "gateway")["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    listen = env_of(container)["GATEWAY_METRICS_LISTEN_ADDR"]["value"]
    assert listen.rsplit(":", 1)[1] == str(ports["metrics"])
    assert ports["metrics"] != ports["http"]
    service_ports = [port["targetPort"] for port in manifests.one("Service", "chat-gateway")["spec"]["ports"]]
    assert "metrics" not in service_ports and ports["metrics"] not in service_ports


def test_the_services_metrics_have_their_own_port_outside_their_services(manifests):
    for component, prefix in (("auth", "AUTH"), ("chat", "CHAT"), ("group", "GROUP")):
        container = deployment(manifests, component)["spec"]["template"]["spec"]["containers"][0]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        listen = env_of(container)[f"{prefix}_METRICS_LISTEN_ADDR"]["value"]
        assert listen.rsplit(":", 1)[1] == str(ports["metrics"]), component
        assert ports["metrics"] != ports["grpc"], component
        for service in manifests.kind("Service"):
            if service["metadata"]["name"].startswith(f"chat-{component}"):
                targets = [port["targetPort"] for port in service["spec"]["ports"]]
                assert "metrics" not in targets and ports["metrics"] not in targets, component


def test_scrape_annotations_point_at_each_components_metrics_port(manifests):
    for component in SERVICES:
        pod = deployment(manifests, component)["spec"]["template"]
        ports = {port["name"]: port["containerPort"] for port in pod["spec"]["containers"][0]["ports"]}
        annotations = pod["metadata"].get("annotations", {})
        assert annotations["prometheus.io/scrape"] == "true", component
        assert annotations["prometheus.io/port"] == str(ports["metrics"]), component
        assert annotations["prometheus.io/path"] == "/metrics", component


def test_the_ingress_speaks_grpc_to_the_gateway_with_tls_when_asked(manifests):
    ingress = manifests.kind("Ingress")[0]
    annotations = ingress["metadata"].get("annotations", {})
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    if manifests.name == "production":
        assert ingress["spec"]["tls"] == [{"secretName": "chat-example-com-tls",
                                           "hosts": ["chat.example.com"]}]


def test_the_ingress_never_cuts_a_long_stream_by_its_body_size(manifests):
    # An OpenStream is one request whose body is every message the client sends on it: any body
    # limit ends long streams (client/tests/cluster: ingress.rs). The gateway bounds each message.
    ingress = manifests.kind("Ingress")[0]
    annotations = ingress["metadata"].get("annotations", {})
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"


def test_the_ingress_timeouts_leave_room_for_two_heartbeats(manifests):
    # nginx resets a stream silent in both directions for grpc_read_timeout; chat's heartbeat is
    # what crosses a quiet stream, and a busy stream may skip one.
    ingress = manifests.kind("Ingress")[0]
    annotations = ingress["metadata"].get("annotations", {})
    chat = deployment(manifests, "chat")["spec"]["template"]["spec"]["containers"][0]
    heartbeat = int(env_of(chat)["CHAT_HEARTBEAT_SECS"]["value"])
    assert heartbeat > 0
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 2 * heartbeat, timeout


def test_every_container_runs_with_the_restricted_pod_security_settings(manifests):
    workloads = manifests.workloads()
    assert workloads
    for workload in workloads:
        name = f'{workload["kind"]}/{workload["metadata"]["name"]}'
        spec = Manifests.pod_spec(workload)
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, name
        assert pod.get("runAsUser", 0) != 0, name
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), name
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{name}: volume {volume}"
        for container in containers(spec):
            where = f'{name} container {container["name"]}'
            context = container.get("securityContext", {})
            assert context.get("runAsNonRoot") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("privileged", False) is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert context.get("runAsUser", pod.get("runAsUser")) != 0, where


def test_every_deployment_has_probes_an_hpa_and_a_pdb(manifests):
    deployments = manifests.kind("Deployment")
    assert {Manifests.component(d) for d in deployments} == set(SERVICES)
    for dep in deployments:
        name = dep["metadata"]["name"]
        for container in dep["spec"]["template"]["spec"]["containers"]:
            assert "readinessProbe" in container, name
            assert "livenessProbe" in container, name
        hpas = [h for h in manifests.kind("HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                   "name": name}]
        assert len(hpas) == 1, f"{name}: {len(hpas)} HPAs"
        assert hpas[0]["apiVersion"] == "autoscaling/v2"
        metrics = hpas[0]["spec"]["metrics"]
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
        assert "replicas" not in dep["spec"], f"{name}: replicas would fight the HPA on upgrade"
        cpu_requests = [c["resources"]["requests"]["cpu"]
                        for c in dep["spec"]["template"]["spec"]["containers"]]
        assert all(cpu_requests), f"{name}: CPU utilisation needs a CPU request"
        pod_labels = Manifests.pod_labels(dep)
        pdbs = [p for p in manifests.kind("PodDisruptionBudget")
                if selects(p["spec"]["selector"], pod_labels)]
        assert len(pdbs) == 1, f"{name}: {len(pdbs)} PDBs"
        spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone",
                                                      "kubernetes.io/hostname"}
        assert all(selects(c["labelSelector"], pod_labels) for c in spread), name


def proto_services() -> set[str]:
    """Fully qualified gRPC service names declared in proto/."""
    names = set()
    for path in (REPO / "proto").rglob("*.proto"):
        text = path.read_text()
        package = re.search(r"^package\s+([\w.]+);", text, re.M)
        for service in re.findall(r"^service\s+(\w+)", text, re.M):
            names.add(f"{package.group(1)}.{service}")
    return names


def health_reported_services(component: str) -> set[str]:
    """Services whose health <component>/src/lib.rs reports: `SERVICES`, the names of the
    `common::service::Service` it serves (whose health common::service::serve tracks with
    common::health::track_database), names server types. A type is either an alias of a
    generated server (`type AuthServer = pb::auth_service_server::AuthServiceServer<AuthApi>`
    gives AuthService) or a wrapper that takes its name from one (`impl NamedService for
    ChatServer { const NAME ... = <ChatServiceServer<ChatApi> as NamedService>::NAME; }`)."""
    lib = (REPO / component / "src" / "lib.rs").read_text()
    sources = "\n".join(path.read_text() for path in (REPO / component / "src").rglob("*.rs"))
    assert re.search(r"common::service::Service\s*\{[^}]*names:\s*SERVICES", lib), (
        f"{component}: health not tracked"
    )
    service = (REPO / "common" / "src" / "service.rs").read_text()
    assert re.search(r"track_database\([^)]*names", service), "common::service: health not tracked"
    listed = re.search(r"pub const SERVICES: &\[&str\] = &\[([^\]]*)\]", lib).group(1)
    names = set()
    for alias in re.findall(r"(\w+)::NAME", listed):
        server = re.search(rf"type {alias} =\s*\w+::\w+::(\w+)Server<", sources) or re.search(
            rf"impl NamedService for {alias} \{{\s*const NAME: &'static str =\s*<(\w+)Server<",
            sources,
        )
        assert server, f"{component}: no server type named {alias}"
        names.add(server.group(1))
    return names


def test_services_are_probed_through_their_grpc_health_and_the_gateway_over_http(manifests):
    declared = proto_services()
    for component in ("auth", "chat", "group"):
        container = deployment(manifests, component)["spec"]["template"]["spec"]["containers"][0]
        grpc = container["readinessProbe"]["grpc"]
        assert grpc["port"] == container["ports"][0]["containerPort"]
        # The service must be one the server reports health for: its own API, from the protos,
        # served through common::service::serve in its lib.rs, which tracks its health.
        assert grpc["service"] in declared, grpc
        assert grpc["service"].startswith(f"{component}.v1."), grpc
        assert grpc["service"].rsplit(".", 1)[1] in health_reported_services(component), grpc
    gateway = deployment(manifests, "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    gateway_source = (REPO / "gateway" / "src" / "lib.rs").read_text()
    assert '"/healthz"' in gateway_source and '"/readyz"' in gateway_source


def test_termination_leaves_time_for_the_prestop_sleep_and_the_drain(manifests):
    for component in SERVICES:
        spec = deployment(manifests, component)["spec"]["template"]["spec"]
        container = spec["containers"][0]
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = int(env_of(container)[f"{component.upper()}_SHUTDOWN_TIMEOUT_SECS"]["value"])
        assert sleep > 0
        assert spec["terminationGracePeriodSeconds"] >= sleep + drain, component
    # A stopping pod stays in its callers' connections until they re-resolve DNS: every service
    # reached through a headless name (by the gateway, and by chat and group through
    # common::balance) sleeps at least that long first.
    gateway = deployment(manifests, "gateway")["spec"]["template"]["spec"]["containers"][0]
    interval = max(int(env_of(gateway)["GATEWAY_UPSTREAM_RESOLVE_INTERVAL_SECS"]["value"]),
                   balanced_channel_resolve_interval())
    for component in ("auth", "chat", "group"):
        container = deployment(manifests, component)["spec"]["template"]["spec"]["containers"][0]
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] >= interval, component


def balanced_channel_resolve_interval() -> int:
    """Seconds between re-resolutions of chat's and group's channels (common::balance)."""
    source = (REPO / "common" / "src" / "balance.rs").read_text()
    found = re.search(r"const RESOLVE_INTERVAL: Duration = Duration::from_secs\((\d+)\);", source)
    assert found, "RESOLVE_INTERVAL not found in common/src/balance.rs"
    return int(found.group(1))


# Settings named *_URL that are not a component of the chart.
NOT_COMPONENT_URLS = {"CHAT_NATS_URL"}


def service_for_url(manifests: Manifests, url: str) -> dict:
    parsed = urlparse(url)
    assert parsed.scheme == "http", url
    service = manifests.one("Service", parsed.hostname)
    assert parsed.port in [p["port"] for p in service["spec"]["ports"]], url
    return service


def test_every_upstream_url_names_a_service_of_that_component(manifests):
    for component in SERVICES:
        container = deployment(manifests, component)["spec"]["template"]["spec"]["containers"][0]
        for name, entry in env_of(container).items():
            if not name.endswith("_URL") or "value" not in entry or name in NOT_COMPONENT_URLS:
                continue
            target = name.split("_")[1].lower()  # CHAT_GROUP_URL -> group
            service = service_for_url(manifests, entry["value"])
            target_pods = Manifests.pod_labels(deployment(manifests, target))
            assert all(target_pods.get(k) == v for k, v in service["spec"]["selector"].items()), name


# Every call between components, and who makes it: none goes through a ClusterIP, which would pin
# each caller's HTTP/2 connections to one pod (the gateway's upstream pools and chat's and group's
# balanced channels resolve the headless names themselves, again and again).
CALLS_BETWEEN_COMPONENTS = {
    "gateway": {"GATEWAY_AUTH_URL", "GATEWAY_CHAT_URL", "GATEWAY_GROUP_URL"},
    "chat": {"CHAT_AUTH_URL", "CHAT_GROUP_URL"},
    "group": {"GROUP_AUTH_URL"},
    "auth": set(),
}


def test_calls_between_components_reach_every_pod_through_headless_services(manifests):
    for component, urls in CALLS_BETWEEN_COMPONENTS.items():
        env = env_of(deployment(manifests, component)["spec"]["template"]["spec"]["containers"][0])
        set_urls = {name for name in env if name.endswith("_URL") and "value" in env[name]}
        assert set_urls - NOT_COMPONENT_URLS == urls, component
        for name in urls:
            service = service_for_url(manifests, env[name]["value"])
            assert service["spec"]["clusterIP"] == "None", name
            assert not service["spec"].get("publishNotReadyAddresses", False), name


def test_every_secret_file_is_mounted_from_a_secret(manifests):
    rendered_secrets = {s["metadata"]["name"]: s for s in manifests.kind("Secret")}
    for workload in manifests.workloads():
        spec = Manifests.pod_spec(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(spec):
            mounts = container.get("volumeMounts", [])
            for name, entry in env_of(container).items():
                if not name.endswith("_FILE"):
                    continue
                path = entry["value"]
                mount = [m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")]
                assert len(mount) == 1, f"{name}={path} is not under one mount"
                secret = volumes[mount[0]["name"]]["secret"]
                relative = path[len(mount[0]["mountPath"].rstrip("/")) + 1:]
                item = [i for i in secret["items"] if i["path"] == relative]
                assert len(item) == 1, f"{name}: {relative} not projected"
                if secret["secretName"] in rendered_secrets:
                    assert item[0]["key"] in rendered_secrets[secret["secretName"]]["data"], name
                else:
                    # An existing Secret named in the values.
                    assert manifests.name == "production", f"{name}: {secret['secretName']} missing"


def test_generated_secrets_have_the_formats_the_binaries_expect(default_manifests):
    secrets = {s["metadata"]["name"]: s for s in default_manifests.kind("Secret")}
    pem = base64.b64decode(secrets["chat-auth-signing-key"]["data"]["signing-key.pem"]).decode()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8 PEM expected"
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    assert b"\x06\x03\x2b\x65\x70" in der, "not an Ed25519 (OID 1.3.101.112) key"
    refresh = base64.b64decode(secrets["chat-auth-refresh-token-secret"]["data"]["refresh-token-secret"])
    assert len(base64.b64decode(refresh)) >= 32, "refresh token secret: base64 of >= 32 bytes"
    service = base64.b64decode(secrets["chat-service-secret"]["data"]["service-secret"])
    assert len(service) >= 32 and len(base64.b64decode(service)) >= 32
    for secret in secrets.values():
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_migrations_run_as_a_helm_hook_job_before_the_new_version(manifests):
    jobs = manifests.kind("Job")
    assert len(jobs) == 1
    job = jobs[0]
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    bundled = manifests.name == "default"
    assert hooks == ({"post-install", "pre-upgrade"} if bundled else {"pre-install", "pre-upgrade"})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/usr/local/bin/migrate"]
    assert set(env_of(container)) == {"MIGRATE_DATABASE_URL"}
    assert 'name = "migrate"' in (REPO / "common" / "Cargo.toml").read_text() or \
        (REPO / "common" / "src" / "bin" / "migrate.rs").is_file()


def test_the_bundled_postgresql_admits_every_pool_at_full_scale(default_manifests):
    manifests = default_manifests
    postgres = manifests.one("StatefulSet", "chat-postgresql")["spec"]["template"]["spec"]
    args = postgres["containers"][0]["args"]
    max_connections = int(args[args.index("-c") + 1].removeprefix("max_connections="))
    needed = 1  # the migrations Job
    for component in ("auth", "chat", "group"):
        dep = deployment(manifests, component)
        pool = int(env_of(dep["spec"]["template"]["spec"]["containers"][0])
                   [f"{component.upper()}_DATABASE_MAX_CONNECTIONS"]["value"])
        hpa = manifests.one("HorizontalPodAutoscaler", dep["metadata"]["name"])
        needed += pool * hpa["spec"]["maxReplicas"]
    assert max_connections >= needed, f"max_connections={max_connections}, pools need {needed}"


def test_the_migrations_deadline_ends_before_helms_default_wait(manifests):
    # Helm waits for a hook for --timeout (5 minutes by default) and then fails the release
    # while the Job goes on: the Job must end first, so that its own failure is what Helm reports.
    job = manifests.kind("Job")[0]
    assert job["spec"]["activeDeadlineSeconds"] < 5 * 60
    readme = (REPO / "charts" / "chat" / "README.md").read_text()
    assert "--timeout" in readme and "migrations.activeDeadlineSeconds" in readme


def public_services() -> set[str]:
    """proto::PUBLIC_SERVICES: what the gateway serves, and reflects (proto/src/lib.rs)."""
    lib = (REPO / "proto" / "src" / "lib.rs").read_text()
    listed = re.search(r"pub const PUBLIC_SERVICES: &\[&str\] = &\[([^\]]*)\]", lib).group(1)
    return set(re.findall(r'"([\w.]+)"', listed))


def test_helm_test_calls_the_gateways_health_and_reflection_through_its_service(manifests):
    pods = [w for w in manifests.workloads() if w["kind"] == "Pod"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # Kept after the run, for `helm test --logs` (deploy.yml reads them).
    assert "hook-succeeded" not in pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "docker.io/fullstorydev/grpcurl:v1.9.1-alpine"
    script = container["args"][0]
    service = manifests.one("Service", "chat-gateway")
    assert f'address="chat-gateway:{service["spec"]["ports"][0]["port"]}"' in script
    assert "grpc.health.v1.Health/Check" in script and '"status": "SERVING"' in script
    listed = set(re.search(r"for service in ([^;]*); do", script).group(1).split())
    assert listed == public_services() | {"grpc.health.v1.Health"}


# ----------------------------------------------------------------------------- monitoring
# The dashboard and the alerts (monitoring.*): off by default, on when asked, carrying the files
# in charts/chat/files as they are (promtool and chat's dashboard test check those files).
MONITORING_ON = ["--set", "monitoring.dashboards.enabled=true", "--set", "monitoring.rules.enabled=true",
                 "--set", "monitoring.rules.labels.release=kube-prometheus-stack",
                 "--set", "monitoring.dashboards.annotations.grafana_folder=Chat"]


def test_the_dashboard_and_the_alerts_are_off_by_default(manifests):
    assert manifests.kind("PrometheusRule") == []
    assert not [c for c in manifests.kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]


def test_the_dashboard_ships_in_a_configmap_for_the_grafana_sidecar_when_enabled():
    rendered = Manifests("monitoring", render_args(MONITORING_ON))
    dashboards = [c for c in rendered.kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]

    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["annotations"] == {"grafana_folder": "Chat"}
    (name, text), = dashboards[0]["data"].items()
    assert name.endswith(".json")
    shipped = json.loads(text)
    assert shipped == json.loads((REPO / "charts/chat/files/dashboard.json").read_text())
    titles = {p["title"] for p in shipped["panels"]}
    for wanted in ("Request rate per method", "Errors per method", "Latency per method (p99, unary calls)",
                   "Open streams", "Send-to-ack latency", "Deliveries/s", "Commit batch size", "Commit latency",
                   "Database pool saturation", "Bus lag (commit to wake-up)", "Slow-consumer cuts and full queues"):
        assert wanted in titles, wanted


def test_the_alerts_ship_as_a_prometheus_rule_with_a_runbook_each_when_enabled():
    rendered = Manifests("monitoring", render_args(MONITORING_ON))
    rules = rendered.kind("PrometheusRule")
    runbooks = (REPO / "docs/operations.md").read_text()

    assert len(rules) == 1
    assert rules[0]["apiVersion"] == "monitoring.coreos.com/v1"
    assert rules[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rules[0]["spec"] == yaml.safe_load((REPO / "charts/chat/files/alerts.rules.yaml").read_text())
    alerts = [rule for group in rules[0]["spec"]["groups"] for rule in group["rules"]]
    assert len(alerts) >= 6
    for alert in alerts:
        anchor = alert["alert"].lower()
        assert alert["annotations"]["runbook"] == f"docs/operations.md#{anchor}"
        # docs/operations.md has a section named after the alert, whose anchor is that.
        assert re.search(rf"^### `?{alert['alert']}`?$", runbooks, re.MULTILINE), alert["alert"]


def test_the_pod_monitors_name_the_job_after_the_component():
    docs = render_args(["--set", "gateway.podMonitor.enabled=true", "--set", "serviceMetrics.podMonitor.enabled=true",
                        "--set", "networkPolicy.metricsScrapers[0].podSelector.matchLabels.app=prometheus"])
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]

    assert len(monitors) == 4
    for monitor in monitors:
        # The alerts and the dashboard select job="gateway", "auth", "chat", "group".
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/component"
