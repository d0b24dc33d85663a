"""The chart sets only environment variables the binaries read, and every one they require.

The source of truth is each service's `local.env.example` (a unit test in each crate keeps it equal
to what `Config::from_lookup` reads) and the setting names in `src/config.rs` and
`common/src/config.rs`. The migrate binary has no env file: it reads `DatabaseSettings` with the
prefix MIGRATE (common/src/bin/migrate.rs).
"""

import re

import pytest

from conftest import REPO, Manifests

PREFIXES = {"auth": "AUTH", "chat": "CHAT", "group": "GROUP", "gateway": "GATEWAY"}
# Settings the chart may set before every crate reads them (none now: the service credential
# and the NATS bus are read by their services).
PENDING: set[str] = set()


def documented_env_keys(text: str) -> set[str]:
    """Like common::config::documented_env_keys: set and commented-out `KEY=` lines."""
    keys = set()
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        key, sep, _ = line.partition("=")
        key = key.strip()
        if sep and key and re.fullmatch(r"[A-Z0-9_]+", key):
            keys.add(key)
    return keys


def config_sources(component: str) -> str:
    paths = [REPO / "common" / "src" / "config.rs"]
    if component == "migrate":
        paths.append(REPO / "common" / "src" / "bin" / "migrate.rs")
    else:
        paths.append(REPO / component / "src" / "config.rs")
    paths += [p for p in [REPO / "common" / "src" / "service_credential.rs"] if p.is_file()]
    # The standard OTEL_* variables (ServerSettings::trace_export) are read there.
    paths.append(REPO / "common" / "src" / "telemetry.rs")
    return "\n".join(p.read_text() for p in paths)


def settings_read(source: str) -> set[str]:
    """Setting names passed as string literals to EnvReader methods (`"LISTEN_ADDR"`)."""
    return set(re.findall(r'"([A-Z][A-Z0-9_]*)"', source))


def required_settings(source: str) -> set[str]:
    """Settings read with .secret / .required / .secret_source (no default): must be set."""
    return set(re.findall(r'\.(?:secret|required|secret_source)\(\s*"([A-Z][A-Z0-9_]*)"', source))


def known_names(component: str) -> set[str]:
    if component == "migrate":
        migrate = (REPO / "common" / "src" / "bin" / "migrate.rs").read_text()
        assert 'EnvReader::new("MIGRATE"' in migrate and "DatabaseSettings::from_env" in migrate
        return {"MIGRATE_DATABASE_URL", "MIGRATE_DATABASE_MAX_CONNECTIONS"}
    example = (REPO / component / "local.env.example").read_text()
    return documented_env_keys(example) | {n for n in PENDING if n.startswith(PREFIXES[component] + "_")}


def rendered_env(manifests: Manifests) -> dict[str, set[str]]:
    """component -> env var names its containers get (the bundled PostgreSQL and the `helm test`
    Pod run other images)."""
    result: dict[str, set[str]] = {}
    for workload in manifests.workloads():
        component = Manifests.component(workload)
        if component in ("postgresql", "test"):
            continue
        spec = Manifests.pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert not container.get("envFrom"), f"{component}: envFrom hides the variable names"
            result.setdefault(component, set()).update(e["name"] for e in container.get("env", []))
    return result


def test_every_component_is_rendered(manifests):
    assert set(rendered_env(manifests)) == {"auth", "chat", "group", "gateway", "migrate"}


def test_every_variable_the_chart_sets_is_one_the_binary_reads(manifests):
    for component, names in rendered_env(manifests).items():
        unknown = names - known_names(component)
        assert not unknown, f"{component} does not read {sorted(unknown)}"
        prefix = "MIGRATE" if component == "migrate" else PREFIXES[component]
        read = settings_read(config_sources(component))
        for name in names - PENDING:
            setting = name if name.startswith("OTEL_") else name.removeprefix(prefix + "_")
            # X_FILE is read by secret_source("X") / optional_secret_source("X").
            stem = setting.removesuffix("_FILE")
            assert setting in read or stem in read, f"{name}: {setting!r} not in the config code"


def test_every_required_variable_is_set(manifests):
    for component, names in rendered_env(manifests).items():
        if component == "migrate":
            prefix, required = "MIGRATE", {"DATABASE_URL"}
        else:
            prefix = PREFIXES[component]
            own = (REPO / component / "src" / "config.rs").read_text()
            required = required_settings(own)
            if "DatabaseSettings::from_env" in own:
                required.add("DATABASE_URL")  # DatabaseSettings reads it with .secret()
        for setting in required:
            name = f"{prefix}_{setting}"
            assert name in names or f"{name}_FILE" in names, f"{component}: {name} is required"


@pytest.mark.parametrize("component", ["auth", "chat", "group", "gateway"])
def test_the_env_files_parse(component):
    # Guards the parser above: every example names at least its listen address and log filter.
    keys = known_names(component)
    assert f"{PREFIXES[component]}_LISTEN_ADDR" in keys and f"{PREFIXES[component]}_LOG" in keys


def test_no_container_sets_a_variable_twice(manifests):
    for workload in manifests.workloads():
        spec = Manifests.pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            names = [entry["name"] for entry in container.get("env", [])]
            assert len(names) == len(set(names)), f'{workload["metadata"]["name"]}: {names}'
