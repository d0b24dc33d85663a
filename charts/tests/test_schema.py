"""Bad values fail `helm template` (and so `helm install`) with a message naming the value."""

import pytest

from conftest import helm_template

SCHEMA_FAILURE = "values don't meet the specifications of the schema"

BAD_VALUES = [
    # (arguments, what the message must name)
    (["--set", "postgresql.enabled=false"], "database.existingSecret"),
    (["--set", "postgresql.enabled=true", "--set", "database.existingSecret=db"], "database.existingSecret"),
    (["--set", "components.auth.port=80"], "components.auth.port"),
    (["--set", "components.chat.replicas=0"], "components.chat.replicas"),
    (["--set", "logFormat=xml"], "logFormat"),
    (["--set", "auth.accessTokenTtlSeconds=3600"], "auth.accessTokenTtlSeconds"),
    (["--set", "ingress.tls.enabled=true"], "ingress.tls.secretName"),
    (["--set", "components.chat.extraEnv.AUTH_LOG=debug"], "components.chat.extraEnv"),
    (["--set", "components.gateway.autoscaling.targetCPUUtilizationPercentage=150"],
     "components.gateway.autoscaling.targetCPUUtilizationPercentage"),
    (["--set", "replicaCount=3"], "replicaCount"),
    (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
    # The HPA's CPU utilisation needs a CPU request.
    (["--set", "components.group.resources.requests.cpu=null"], "components.group.resources.requests"),
    (["--set", "gateway.corsAllowedOrigins[0]=chat.example.com"], "gateway.corsAllowedOrigins.0"),
]


@pytest.mark.parametrize("args,named", BAD_VALUES, ids=[named for _, named in BAD_VALUES])
def test_a_bad_value_fails_with_a_message_naming_it(args, named):
    result = helm_template(*args)

    assert result.returncode != 0, f"{args} rendered"
    assert SCHEMA_FAILURE in result.stderr, result.stderr
    assert named in result.stderr, result.stderr


def test_a_grace_period_shorter_than_the_drain_fails_with_a_message():
    result = helm_template("--set", "components.chat.terminationGracePeriodSeconds=20")

    assert result.returncode != 0
    assert "components.chat.terminationGracePeriodSeconds (20) must be at least" in result.stderr


def test_the_default_values_render():
    result = helm_template()

    assert result.returncode == 0, result.stderr


def test_extra_env_cannot_override_what_the_chart_sets():
    result = helm_template("--set", "components.auth.extraEnv.AUTH_LOG=debug")

    assert result.returncode != 0
    assert "components.auth.extraEnv.AUTH_LOG is set by the chart itself" in result.stderr
