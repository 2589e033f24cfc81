"""Lint the chart and validate every rendered manifest against the Kubernetes API schemas
(kubernetes-validate --strict: unknown fields are errors) for Kubernetes 1.29 and 1.33."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from conftest import CHART, render
from scenarios import SCENARIOS

KUBERNETES_VERSIONS = ["1.29.0", "1.33.0"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint(scenario):
    report = helm.lint(CHART, SCENARIOS[scenario], strict=True, namespace="eg-ns")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> list[Path]:
    """One file per rendered document of every scenario, named scenario-index-kind-name."""
    out = tmp_path_factory.mktemp("manifests")
    files = []
    for scenario, values in sorted(SCENARIOS.items()):
        for i, doc in enumerate(render(values)):
            f = out / f"{scenario}-{i:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
            f.write_text(yaml.safe_dump(doc, sort_keys=False))
            files.append(f)
    return files


def validator() -> str:
    found = shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable)) or shutil.which(
        "kubernetes-validate"
    )
    assert found, "kubernetes-validate is not installed (tests/scripts/install-deps.sh installs it)"
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_validate_every_manifest(manifests, version):
    assert len(manifests) > 60
    result = subprocess.run(
        [validator(), "-k", version, "--strict", "--quiet", *map(str, manifests)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"kubernetes {version}:\n{result.stdout}{result.stderr}"


def test_validator_rejects_an_invalid_manifest(tmp_path):
    """The validator really checks: a wrong type and, with --strict, an unknown field fail."""
    wrong_type = render().get("Deployment")
    wrong_type["spec"]["replicas"] = "two"
    unknown_field = render().get("Deployment")
    unknown_field["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    for doc, named in ((wrong_type, "replicas"), (unknown_field, "imagePullPolicyy")):
        f = tmp_path / f"{named}.yaml"
        f.write_text(yaml.safe_dump(doc))
        result = subprocess.run(
            [validator(), "-k", KUBERNETES_VERSIONS[-1], "--strict", "--quiet", str(f)],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0 and named in result.stdout + result.stderr, result
