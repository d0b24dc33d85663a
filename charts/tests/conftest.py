"""Fixtures for the chart tests: the chart rendered offline by `helm template`.

Run through ci/chart-check.sh, which installs helm into .tools/ (or set HELM to a helm binary):

    HELM=.tools/helm/helm .venv/bin/pytest charts/tests
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "chat"
# The values files every manifest test runs against: the defaults (bundled PostgreSQL, generated
# secrets) and a production-like configuration (external database, existing Secrets, TLS).
VALUES_FILES = {
    "default": [],
    "production": [CHART / "ci" / "production-values.yaml"],
}
RELEASE = "chat"
NAMESPACE = "chat"


def helm_binary() -> str:
    helm = os.environ.get("HELM") or str(REPO / ".tools" / "helm" / "helm")
    if not Path(helm).is_file():
        pytest.fail(f"no helm at {helm}: run ci/chart-check.sh, or set HELM")
    return helm


def helm_template(*args: str) -> subprocess.CompletedProcess:
    """Runs `helm template` on the chart with extra arguments; never raises on failure."""
    command = [helm_binary(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
               "--kube-version", "1.30.0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def names_value(stderr: str, path: str) -> bool:
    """Whether a failure's message names a value, whichever Helm printed it: Helm 3 writes a
    schema error's path dotted (`components.auth.port: ...`), Helm 4 as a JSON pointer
    (`at '/components/auth/port': ...`). The tests match nothing else of Helm's wording; the
    chart's own `fail` messages, which they match in full, are the chart's."""
    return path in stderr or "/" + path.replace(".", "/") in stderr


def render(values_files) -> list[dict]:
    args = []
    for path in values_files:
        args += ["-f", str(path)]
    return render_args(args)


def render_args(args: list[str]) -> list[dict]:
    """The objects `helm template` renders with extra arguments (`--set ...`); it must succeed."""
    result = helm_template(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Manifests:
    """The rendered objects of one values file, with look-ups by kind and component."""

    def __init__(self, name: str, docs: list[dict]):
        self.name = name
        self.docs = docs

    def kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        found = [doc for doc in self.kind(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def workloads(self) -> list[dict]:
        """Everything that makes pods."""
        return [doc for doc in self.docs
                if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "Pod", "CronJob")]

    @staticmethod
    def pod_spec(workload: dict) -> dict:
        if workload["kind"] == "Pod":
            return workload["spec"]
        if workload["kind"] == "CronJob":
            return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return workload["spec"]["template"]["spec"]

    @staticmethod
    def pod_labels(workload: dict) -> dict:
        if workload["kind"] == "Pod":
            return workload["metadata"].get("labels", {})
        return workload["spec"]["template"]["metadata"].get("labels", {})

    @staticmethod
    def component(obj: dict) -> str:
        return obj["metadata"]["labels"]["app.kubernetes.io/component"]

    def values(self) -> dict:
        """The values file itself (empty for the defaults)."""
        merged: dict = {}
        for path in VALUES_FILES[self.name]:
            merged.update(yaml.safe_load(Path(path).read_text()))
        return merged


@pytest.fixture(scope="session", params=sorted(VALUES_FILES))
def manifests(request) -> Manifests:
    return Manifests(request.param, render(VALUES_FILES[request.param]))


@pytest.fixture(scope="session")
def default_manifests() -> Manifests:
    return Manifests("default", render(VALUES_FILES["default"]))


def selects(selector: dict, labels: dict) -> bool:
    """Whether a matchLabels selector (no expressions are used by the chart) selects labels."""
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())
