"""Shared helpers of the chart tests: render the chart offline with Helm's Go SDK
(helm-python-sdk) and collect every rendered document for schema validation."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "enterprise-gateway"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASE = "enterprise-gateway"
NAMESPACE = "eg-ns"

class Manifests(list):
    """The documents of one render, with lookups by kind and name."""

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self)

    def all(self, kind: str) -> list[dict]:
        return [d for d in self if d["kind"] == kind]

    def get(self, kind: str, name: str | None = None) -> dict:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}: {self.kinds()}"
        return found[0]

    def has(self, kind: str, name: str | None = None) -> bool:
        return any(name is None or d["metadata"]["name"] == name for d in self.all(kind))


_chart = None


def chart() -> helm.Chart:
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(CHART)
    return _chart


def render(values: dict | None = None) -> Manifests:
    """Renders the chart like `helm template enterprise-gateway CHART -n eg-ns -f values`."""
    out = chart().render(values or {}, name=RELEASE, namespace=NAMESPACE)
    docs = Manifests()
    for path in sorted(out):
        for doc in yaml.safe_load_all(out[path]):
            if doc:
                docs.append(doc)
    return docs


def fixture_values(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text()) or {}


def env_of(container: dict) -> dict[str, object]:
    """name -> value, or name -> valueFrom for variables taken from a Secret."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def container(workload: dict, name: str | None = None) -> dict:
    cs = workload["spec"]["template"]["spec"]["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


@pytest.fixture
def helm_error():
    """Expects rendering to fail; returns the error message."""

    def run(values: dict) -> str:
        with pytest.raises(helm.HelmError) as e:
            chart().render(values, name=RELEASE, namespace=NAMESPACE)
        return str(e.value)

    return run
