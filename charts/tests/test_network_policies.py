"""NetworkPolicies: who may talk to whom, from the rendered policies.

Only the Ingress controller reaches the gateway; only the gateway reaches auth, chat and group,
plus chat -> group and chat/group -> auth; the services and the migrations reach PostgreSQL;
everything reaches cluster DNS; nothing else.
"""

import json

import pytest
import yaml

from conftest import CHART, Manifests, render_args, selects

# component -> components allowed to connect to it (inside the release).
EXPECTED_CALLERS = {
    "gateway": set(),
    "auth": {"gateway", "chat", "group"},
    "chat": {"gateway"},
    "group": {"gateway", "chat"},
    "migrate": set(),
}
# component -> components it may connect to (PostgreSQL as "database").
EXPECTED_CALLEES = {
    "gateway": {"auth", "chat", "group"},
    "auth": {"database"},
    "chat": {"auth", "group", "database"},
    "group": {"auth", "database"},
    "migrate": {"database"},
    "test": {"gateway"},
}


def is_test_hook(obj: dict) -> bool:
    """Objects of `helm test` only, created for the run and deleted after it."""
    return obj["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"


def policies_for(manifests: Manifests, workload: dict) -> list[dict]:
    labels = Manifests.pod_labels(workload)
    return [p for p in manifests.kind("NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def component_of_peer(manifests: Manifests, peer: dict) -> str | None:
    """The release component a peer names (a podSelector without namespaceSelector), else None."""
    if set(peer) != {"podSelector"}:
        return None
    for workload in manifests.workloads():
        if selects(peer["podSelector"], Manifests.pod_labels(workload)):
            return Manifests.component(workload)
    raise AssertionError(f"peer {peer} selects no pod of the release")


def test_every_pod_is_isolated_in_both_directions(manifests):
    for workload in manifests.workloads():
        policies = policies_for(manifests, workload)
        assert policies, f'{workload["metadata"]["name"]} has no NetworkPolicy'
        types = {t for p in policies for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, workload["metadata"]["name"]


def gateway_ingress_rules(manifests: Manifests) -> list[dict]:
    """The gateway's ingress rules outside `helm test` runs."""
    gateway = [w for w in manifests.kind("Deployment") if Manifests.component(w) == "gateway"][0]
    return [r for p in policies_for(manifests, gateway) if not is_test_hook(p)
            for r in p["spec"].get("ingress") or []]


def test_only_the_ingress_controller_reaches_the_gateway(manifests):
    rules = [
        r for r in gateway_ingress_rules(manifests) if r["ports"] != [{"port": "metrics", "protocol": "TCP"}]
    ]
    assert len(rules) == 1
    peers = rules[0]["from"]
    controller = peers[0]
    assert controller["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    assert controller["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}
    extra = manifests.values().get("networkPolicy", {}).get("extraGatewayIngressFrom", [])
    assert peers[1:] == extra
    assert all(component_of_peer(manifests, peer) is None for peer in peers)
    assert rules[0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_only_the_configured_scrapers_reach_the_gateways_metrics_port(manifests):
    scrapers = manifests.values().get("networkPolicy", {}).get("metricsScrapers", [])
    metrics_rules = [
        r for r in gateway_ingress_rules(manifests) if r["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    ]
    if scrapers:
        assert [rule["from"] for rule in metrics_rules] == [scrapers]
    else:
        assert metrics_rules == [], "no scraper configured: the metrics port stays closed"


def test_only_the_configured_scrapers_reach_the_services_metrics_ports(manifests):
    scrapers = manifests.values().get("networkPolicy", {}).get("metricsScrapers", [])
    for workload in manifests.kind("Deployment"):
        if Manifests.component(workload) == "gateway":
            continue
        metrics_rules = [
            r for p in policies_for(manifests, workload) if not is_test_hook(p)
            for r in p["spec"].get("ingress") or []
            if r["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        ]
        if scrapers:
            assert [rule["from"] for rule in metrics_rules] == [scrapers]
        else:
            assert metrics_rules == [], "no scraper configured: the metrics port stays closed"


def test_internal_services_accept_only_their_callers(manifests):
    for workload in manifests.workloads():
        component = Manifests.component(workload)
        if component not in EXPECTED_CALLERS or component == "gateway":
            continue
        # The scrapers' rule opens the metrics port only (checked above).
        rules = [r for p in policies_for(manifests, workload) for r in p["spec"].get("ingress") or []
                 if r["ports"] != [{"port": "metrics", "protocol": "TCP"}]]
        callers = set()
        for rule in rules:
            for peer in rule.get("from", []):
                caller = component_of_peer(manifests, peer)
                assert caller is not None, f"{component} accepts {peer} from outside the release"
                callers.add(caller)
            assert rule.get("from"), f"{component}: a rule without `from` admits everyone"
        assert callers == EXPECTED_CALLERS[component], f"{component} accepts {sorted(callers)}"


def test_each_component_connects_only_to_what_it_needs(manifests):
    bundled = manifests.name == "default"
    for workload in manifests.workloads():
        component = Manifests.component(workload)
        if component not in EXPECTED_CALLEES:
            continue
        rules = [r for p in policies_for(manifests, workload) for r in p["spec"].get("egress") or []]
        callees, dns = set(), False
        dns_blocks = dns_ip_blocks(manifests)
        for rule in rules:
            assert rule.get("to"), f"{component}: an egress rule without `to` allows everything"
            ports = {(p["port"], p["protocol"]) for p in rule["ports"]}
            for peer in rule["to"]:
                callee = component_of_peer(manifests, peer)
                if callee == "postgresql":
                    callees.add("database")
                elif callee is not None:
                    callees.add(callee)
                elif ports == {(53, "UDP"), (53, "TCP")} and "ipBlock" in peer:
                    # A resolver by address (NodeLocal DNSCache): only the configured ones.
                    assert peer == {"ipBlock": {"cidr": peer["ipBlock"]["cidr"]}}, peer
                    assert peer["ipBlock"]["cidr"] in dns_blocks, peer
                elif ports == {(53, "UDP"), (53, "TCP")}:
                    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
                    dns = True
                elif "ipBlock" in peer and not bundled and ports == {(5432, "TCP")}:
                    callees.add("database")
                else:
                    raise AssertionError(f"{component}: unexpected egress to {peer} {ports}")
        assert dns, f"{component} cannot resolve names"
        assert callees == EXPECTED_CALLEES[component], f"{component} connects to {sorted(callees)}"


def test_the_bundled_postgresql_accepts_only_the_services_and_migrations(default_manifests):
    manifests = default_manifests
    postgres = [w for w in manifests.workloads() if Manifests.component(w) == "postgresql"][0]
    policies = policies_for(manifests, postgres)
    rules = [r for p in policies for r in p["spec"].get("ingress") or []]
    clients = {component_of_peer(manifests, peer) for r in rules for peer in r["from"]}
    assert clients == {"auth", "chat", "group", "migrate"}
    assert all(not p["spec"].get("egress") for p in policies)


def dns_ip_blocks(manifests: Manifests) -> list[str]:
    """networkPolicy.dns.ipBlocks of a values file, else the chart's default."""
    dns = manifests.values().get("networkPolicy", {}).get("dns", {})
    if "ipBlocks" in dns:
        return dns["ipBlocks"]
    return yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]["dns"]["ipBlocks"]


def test_node_local_dns_cache_is_allowed_by_default():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    assert defaults["networkPolicy"]["dns"]["ipBlocks"] == ["169.254.20.10/32"]


@pytest.mark.parametrize("blocks", [[], ["10.96.0.10/32", "169.254.20.10/32"]], ids=["none", "two"])
def test_dns_is_also_allowed_by_the_configured_addresses_only(blocks):
    args = ["--set-json", f"networkPolicy.dns.ipBlocks={json.dumps(blocks)}"]
    manifests = Manifests("default", render_args(args))

    for policy in manifests.kind("NetworkPolicy"):
        for rule in policy["spec"].get("egress") or []:
            if {(p["port"], p["protocol"]) for p in rule["ports"]} == {(53, "UDP"), (53, "TCP")}:
                by_address = [peer["ipBlock"]["cidr"] for peer in rule["to"] if "ipBlock" in peer]
                assert by_address == blocks, policy["metadata"]["name"]


def test_dns_is_also_allowed_by_address(manifests):
    # NodeLocal DNSCache answers on a link-local address from host-network pods: no pod selector
    # matches them, so every pod's DNS rule must list the configured blocks.
    blocks = dns_ip_blocks(manifests)
    assert blocks, "both values files allow NodeLocal DNSCache"
    for workload in manifests.workloads():
        rules = [r for p in policies_for(manifests, workload) for r in p["spec"].get("egress") or []]
        dns_rules = [r for r in rules if {(p["port"], p["protocol"]) for p in r["ports"]}
                     == {(53, "UDP"), (53, "TCP")}]
        if Manifests.component(workload) == "postgresql":
            assert not dns_rules
            continue
        assert len(dns_rules) == 1, workload["metadata"]["name"]
        by_address = [peer["ipBlock"]["cidr"] for peer in dns_rules[0]["to"] if "ipBlock" in peer]
        assert by_address == blocks, workload["metadata"]["name"]


def test_the_migrations_policy_exists_before_the_migrations_run(manifests):
    # A hook runs before every ordinary resource exists (pre-install): under a default-deny
    # namespace, the Job reaches the database only if its policy is a hook of the same events
    # created before it (a lower weight).
    job = manifests.kind("Job")[0]
    migrate_policies = policies_for(manifests, job["spec"]["template"] | {"kind": "Pod"})
    assert len(migrate_policies) == 1
    policy, job_annotations = migrate_policies[0]["metadata"]["annotations"], job["metadata"]["annotations"]
    assert set(policy["helm.sh/hook"].split(",")) == set(job_annotations["helm.sh/hook"].split(","))
    assert int(policy["helm.sh/hook-weight"]) < int(job_annotations["helm.sh/hook-weight"])
    assert "before-hook-creation" in policy["helm.sh/hook-delete-policy"].split(",")
    # Every other policy is an ordinary resource of the release, or exists during `helm test` only.
    for other in manifests.kind("NetworkPolicy"):
        if other is not migrate_policies[0] and not is_test_hook(other):
            assert "helm.sh/hook" not in other["metadata"].get("annotations", {}), other["metadata"]["name"]


def test_the_helm_test_pod_reaches_the_gateway_during_the_test_only(manifests):
    pod = [w for w in manifests.workloads() if Manifests.component(w) == "test"]
    assert len(pod) == 1 and is_test_hook(pod[0])
    gateway = [w for w in manifests.kind("Deployment") if Manifests.component(w) == "gateway"][0]
    test_rules = [r for p in policies_for(manifests, gateway) if is_test_hook(p)
                  for r in p["spec"].get("ingress") or []]
    assert len(test_rules) == 1
    assert [component_of_peer(manifests, peer) for peer in test_rules[0]["from"]] == ["test"]
    assert test_rules[0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    for policy in policies_for(manifests, gateway) + policies_for(manifests, pod[0]):
        if is_test_hook(policy):
            annotations = policy["metadata"]["annotations"]
            # Created before the Pod (weight 0), deleted once the run succeeded.
            assert int(annotations["helm.sh/hook-weight"]) < 0
            assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"].split(",")
