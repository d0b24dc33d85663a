"""The chart README's install and verify commands match what the release workflow publishes.

ci/release.sh computes every published name (image, chart, signing identity); release.yml and
deploy.yml take them from it. This check ties the three together:
- the README shows `helm install` and `cosign verify` with exactly those names, for a placeholder
  repository `<owner>/<repo>` and the chart's current version;
- its identity regexp accepts the release workflow's identity on a tag and nothing else nearby;
- release.yml publishes under those names (tags v*, the image tags and signing from
  ci/release.sh), and its signing jobs alone hold `id-token: write`.

Run: python3 ci/release_docs_check.py (ci/chart-check.sh release-docs). Exits 1 on any mismatch.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "charts/chat/README.md"
RELEASE = REPO / ".github/workflows/release.yml"
DEPLOY = REPO / ".github/workflows/deploy.yml"
PLACEHOLDER_REPOSITORY = "<owner>/<repo>"


def chart_version() -> str:
    chart = yaml.safe_load((REPO / "charts/chat/Chart.yaml").read_text())
    return str(chart["version"])


def release_names(version: str) -> dict[str, str]:
    # Not GITHUB_OUTPUT: in GitHub Actions, these names must not become the step's outputs.
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_OUTPUT", "GITHUB_REF_TYPE")}
    env |= {"RELEASE_TAG": f"v{version}", "GITHUB_REPOSITORY": PLACEHOLDER_REPOSITORY, "GITHUB_SHA": "0" * 40}
    proc = subprocess.run(
        ["bash", str(REPO / "ci/release.sh"), "names"], env=env, cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"release-docs: ci/release.sh names failed:\n{proc.stderr}")
    out = proc.stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job].get("steps", [])


def runs(workflow: dict, job: str) -> str:
    return "\n".join(step.get("run", "") for step in steps(workflow, job))


def check_readme(names: dict[str, str], version: str, readme: str) -> list[str]:
    chart = names["chart_ref"].removeprefix("oci://")
    expected = [
        f"helm install chat {names['chart_ref']} --version {version}",
        f"cosign verify {names['image']}:{version}",
        f"cosign verify {chart}:{version}",
        f"--certificate-identity-regexp '{names['signer_identity_regexp']}'",
        f"--certificate-oidc-issuer {names['oidc_issuer']}",
        ".github/workflows/deploy.yml",
    ]
    problems = [f"README lacks: {text}" for text in expected if text not in readme]
    # Every identity regexp and issuer shown must be the published one (no stale second copy).
    for shown in re.findall(r"--certificate-identity-regexp '([^']*)'", readme):
        if shown != names["signer_identity_regexp"]:
            problems.append(f"README shows another identity regexp: {shown}")
    for shown in re.findall(r"--certificate-oidc-issuer (\S+)", readme):
        if shown != names["oidc_issuer"]:
            problems.append(f"README shows another OIDC issuer: {shown}")
    for shown in re.findall(r"helm install chat oci://\S+ --version (\S+)", readme):
        if shown != version:
            problems.append(f"README installs version {shown}, the chart is {version}")
    for shown in re.findall(r"cosign verify ghcr\.io/\S+:(\S+)", readme):
        if shown != version:
            problems.append(f"README verifies version {shown}, the chart is {version}")
    for shown in re.findall(r"oci://[^\s`'\",]+", readme):
        if shown != names["chart_ref"]:
            problems.append(f"README shows another chart reference: {shown}")
    return problems


def check_identity_regexp(names: dict[str, str]) -> list[str]:
    regexp = re.compile(names["signer_identity_regexp"])
    workflow_url = f"https://github.com/{PLACEHOLDER_REPOSITORY}/.github/workflows"
    accepted = [names["signer_identity"], f"{workflow_url}/release.yml@refs/tags/v9.9.9"]
    refused = [
        f"{workflow_url}/release.yml@refs/heads/main",
        f"{workflow_url}/deploy.yml@refs/tags/v1.0.0",
        f"{workflow_url}/releaseXyml@refs/tags/v1.0.0",
        f"https://github.com/someone/else/.github/workflows/release.yml@refs/tags/v1.0.0",
    ]
    problems = []
    if f"/{RELEASE.relative_to(REPO)}@" not in names["signer_identity"]:
        problems.append(f"ci/release.sh signs as {names['signer_identity']}, not as {RELEASE.relative_to(REPO)}")
    problems += [f"identity regexp refuses {i}" for i in accepted if not regexp.search(i)]
    problems += [f"identity regexp accepts {i}" for i in refused if regexp.search(i)]
    return problems


def check_release_workflow(names: dict[str, str]) -> list[str]:
    workflow = yaml.safe_load(RELEASE.read_text())
    problems = []
    # PyYAML reads the key `on` as True.
    trigger = workflow.get("on", workflow.get(True, {}))
    if trigger != {"push": {"tags": ["v*"]}}:
        problems.append(f"release.yml must run on tags v* only (the identity regexp wants refs/tags/v): {trigger}")
    if "ci/release.sh names" not in runs(workflow, "meta"):
        problems.append("release.yml's meta job does not take the names from ci/release.sh names")
    build = [s for s in steps(workflow, "image") if str(s.get("uses", "")).startswith("docker/build-push-action@")]
    if len(build) != 1 or build[0]["with"].get("tags") != "${{ needs.meta.outputs.image_tags }}":
        problems.append("release.yml's image job must push one build with the tags from ci/release.sh")
    else:
        options = build[0]["with"]
        if options.get("platforms") != "linux/amd64,linux/arm64" or options.get("sbom") is not True \
                or not str(options.get("provenance", "")).startswith("mode="):
            problems.append("release.yml's image build must be amd64+arm64 with sbom and provenance")
    if "cosign sign" not in runs(workflow, "image") or "cosign verify" not in runs(workflow, "image"):
        problems.append("release.yml's image job must sign the image and verify the signature")
    if "ci/release.sh push-chart" not in runs(workflow, "chart"):
        problems.append("release.yml's chart job must publish with ci/release.sh push-chart")
    for job, spec in workflow["jobs"].items():
        perms = spec.get("permissions")
        if perms is None:
            problems.append(f"release.yml job {job} has no permissions of its own")
            continue
        signs = job in ("image", "chart")
        if (perms.get("id-token") == "write") != signs:
            problems.append(f"release.yml job {job}: id-token: write belongs to the signing jobs only")
    if not workflow.get("permissions") == {}:
        problems.append("release.yml must grant no permissions at the top level")
    return problems


def check_deploy_workflow() -> list[str]:
    workflow = yaml.safe_load(DEPLOY.read_text())
    text = runs(workflow, "deploy")
    return [
        f"deploy.yml lacks {needle}"
        for needle in (
            "ci/release.sh names", "cosign verify", "helm upgrade --install", "--atomic --wait", "helm test"
        )
        if needle not in text
    ]


def main() -> int:
    version = chart_version()
    names = release_names(version)
    problems = check_readme(names, version, README.read_text())
    problems += check_identity_regexp(names)
    problems += check_release_workflow(names)
    problems += check_deploy_workflow()
    for problem in problems:
        print(f"release-docs: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"release-docs: README, release.yml and deploy.yml agree with ci/release.sh for version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
