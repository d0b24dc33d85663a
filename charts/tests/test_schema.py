"""Bad values fail `helm template` (and so `helm install`) with a message naming the value.

Only two things are asserted of a failure: a non-zero exit, and the value's name (conftest's
`names_value` takes Helm 3's dotted path and Helm 4's JSON pointer) or a message of the chart's own
`fail`. Helm's wording around them changes between versions (Helm 4 rewrote every schema error).
"""

import pytest

from conftest import helm_template, names_value

BAD_VALUES = [
    # (arguments, what the message must name)
    (["--set", "postgresql.enabled=false"], "database.existingSecret"),
    (["--set", "postgresql.enabled=true", "--set", "database.existingSecret=db"], "database.existingSecret"),
    (["--set", "components.auth.port=80"], "components.auth.port"),
    (["--set", "components.chat.replicas=0"], "components.chat.replicas"),
    (["--set", "logFormat=xml"], "logFormat"),
    (["--set", "auth.accessTokenTtlSeconds=3600"], "auth.accessTokenTtlSeconds"),
    (["--set", "ingress.tls.enabled=true"], "ingress.tls.secretName"),
    # Helm 4 names the offending key only, at the root ("at ''"): match the key.
    (["--set", "components.chat.extraEnv.AUTH_LOG=debug"], "AUTH_LOG"),
    (["--set", "components.gateway.autoscaling.targetCPUUtilizationPercentage=150"],
     "components.gateway.autoscaling.targetCPUUtilizationPercentage"),
    (["--set", "replicaCount=3"], "replicaCount"),
    (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
    # The HPA's CPU utilisation needs a CPU request.
    (["--set", "components.group.resources.requests.cpu=null"], "components.group.resources.requests"),
    (["--set", "gateway.corsAllowedOrigins[0]=chat.example.com"], "gateway.corsAllowedOrigins.0"),
    (["--set", "chat.heartbeatSeconds=0"], "chat.heartbeatSeconds"),
    # Kubernetes 1.30 refuses a zero preStop sleep.
    (["--set", "components.chat.preStopSleepSeconds=0"], "components.chat.preStopSleepSeconds"),
    (["--set", "networkPolicy.dns.ipBlocks[0]=node-local-dns"], "networkPolicy.dns.ipBlocks.0"),
    (["--set", "bus.kind=kafka"], "bus.kind"),
    (["--set", "bus.nats.url=http://nats:4222"], "bus.nats.url"),
]


@pytest.mark.parametrize("args,named", BAD_VALUES, ids=[named for _, named in BAD_VALUES])
def test_a_bad_value_fails_with_a_message_naming_it(args, named):
    result = helm_template(*args)

    assert result.returncode != 0, f"{args} rendered"
    assert names_value(result.stderr, named), result.stderr


# Rules between values, which JSON Schema cannot state: the chart's own `fail` messages.
RULES = [
    (["--set", "components.chat.terminationGracePeriodSeconds=20"],
     "components.chat.terminationGracePeriodSeconds (20) must be at least"),
    (["--set", "components.auth.extraEnv.AUTH_LOG=debug"],
     "components.auth.extraEnv.AUTH_LOG is set by the chart itself"),
    (["--set", "gateway.metricsPort=8080"], "gateway.metricsPort (8080) must differ"),
    (["--set", "serviceMetrics.port=50062"], "serviceMetrics.port (50062) must differ"),
    (["--set", "chat.heartbeatSeconds=40"],
     "ingress.controllerClientBodyTimeoutSeconds (60) must be at least twice chat.heartbeatSeconds (40)"),
    (["--set", "ingress.streamTimeoutSeconds=20"],
     "ingress.streamTimeoutSeconds (20) must be at least twice chat.heartbeatSeconds (15)"),
    (["--set", "components.group.autoscaling.minReplicas=7"],
     "components.group.autoscaling.minReplicas (7) must be at most maxReplicas (6)"),
    (["--set", r"podLabels.app\.kubernetes\.io/component=web"],
     "podLabels.app.kubernetes.io/component is a label the chart sets"),
    (["--set", r"podLabels.app\.kubernetes\.io/instance=other"],
     "podLabels.app.kubernetes.io/instance is a label the chart sets"),
    (["--set", "gateway.podMonitor.enabled=true"],
     "gateway.podMonitor.enabled needs networkPolicy.metricsScrapers"),
    (["--set", "serviceMetrics.podMonitor.enabled=true"],
     "serviceMetrics.podMonitor.enabled needs networkPolicy.metricsScrapers"),
    (["--set", "bus.kind=nats", "--set", "bus.nats.to[0].podSelector.matchLabels.app=nats"],
     "bus.kind is nats but bus.nats.url is empty"),
    (["--set", "bus.kind=nats", "--set", "bus.nats.url=nats://nats.nats:4222"],
     "bus.kind is nats but bus.nats.to is empty"),
]


@pytest.mark.parametrize("args,message", RULES, ids=[m.split(" ")[0] for _, m in RULES])
def test_values_that_break_a_rule_between_values_fail_with_the_charts_message(args, message):
    result = helm_template(*args)

    assert result.returncode != 0, f"{args} rendered"
    assert message in result.stderr, result.stderr


def test_the_heartbeat_rule_holds_only_for_the_nginx_annotations():
    # Another controller's timeouts are the user's `annotations`: the chart cannot check them.
    result = helm_template("--set", "chat.heartbeatSeconds=40", "--set", "ingress.nginxAnnotations=false")

    assert result.returncode == 0, result.stderr


def test_the_default_values_render():
    result = helm_template()

    assert result.returncode == 0, result.stderr
