"""values.yaml, values.schema.json and the README against the documented Helm parameters."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import CHART, REPO, chart

# The "Helm Configuration Parameters" of Enterprise Gateway's Kubernetes deployment
# documentation, with their documented defaults. `kip.podSecurityPolicy.annotatons` is spelled
# correctly here; `service.ports[n]` entries are checked in test_service_ports_default.
DOCUMENTED = {
    "global.rbac": True,
    "global.commonLabels": {},
    "global.imagePullSecrets": [],
    "imagePullSecretsCreate.enabled": False,
    "imagePullSecretsCreate.annotations": {},
    "imagePullSecretsCreate.secrets": [],
    "image": None,  # "elyra/enterprise-gateway:VERSION": checked below
    "imagePullPolicy": "IfNotPresent",
    "service.type": "ClusterIP",
    "service.externalIPs.k8sMasterPublicIP": "",
    "service.ports": None,
    "deployment.enabled": True,
    "deployment.serviceAccountName": "enterprise-gateway-sa",
    "deployment.tolerations": [],
    "deployment.affinity": {},
    "deployment.nodeSelector": {},
    "deployment.terminationGracePeriodSeconds": 30,
    "deployment.resources": {},
    "deployment.replicas": 1,
    "deployment.extraEnv": {"EG_INHERITED_ENVS": "PATH"},
    "logLevel": "DEBUG",
    "mirrorWorkingDirs": False,
    "authToken": "",
    "kernel.clusterRole": "kernel-controller",
    "kernel.shareGatewayNamespace": False,
    "kernel.launchTimeout": 60,
    "kernel.cullIdleTimeout": 3600,
    "kernel.cullConnected": False,
    "kernel.allowedKernels": None,
    "kernel.defaultKernelName": "python_kubernetes",
    "kernelspecs.image": "",
    "kernelspecs.imagePullPolicy": "Always",
    "nfs.enabled": False,
    "nfs.internalServerIPAddress": "",
    "kernelspecsPvc.enabled": False,
    "kernelspecsPvc.name": "",
    "ingress.enabled": False,
    "ingress.ingressClassName": "",
    "ingress.hostName": "",
    "ingress.pathType": "Prefix",
    "ingress.path": "/",
    "ingress.annotations": {},
    "kip.enabled": True,
    "kip.podSecurityPolicy.create": False,
    "kip.podSecurityPolicy.annotations": {},
    "kip.tolerations": [],
    "kip.affinity": {},
    "kip.nodeSelector": {},
    "kip.serviceAccountName": "kernel-image-puller-sa",
    "kip.resources": None,  # "valid Yaml resources": small defaults, checked in test_render
    "kip.image": None,
    "kip.imagePullPolicy": "IfNotPresent",
    "kip.interval": 300,
    "kip.pullPolicy": "IfNotPresent",
    "kip.criSocket": "/var/run/docker.sock",
    "kip.defaultContainerRegistry": "docker.io",
    "kip.fetcher": "KernelSpecsFetcher",
    "kip.images": [],
    "kip.internalFetcher": "KernelSpecsFetcher",
}


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def lookup(path: str):
    node = values()
    for part in path.split("."):
        assert isinstance(node, dict) and part in node, f"{path} is missing from values.yaml"
        node = node[part]
    return node


def test_every_documented_value_has_its_default():
    for key, default in DOCUMENTED.items():
        value = lookup(key)
        if default is not None:
            assert value == default, f"{key}: {value!r}, documented {default!r}"


def test_images_are_pinned():
    app_version = chart().metadata["appVersion"]
    assert lookup("kip.image").endswith(f":{app_version}"), "kip.image tag must be the appVersion"
    # This project's gateway, from the same registry and at the same version as the KIP.
    assert lookup("image") == lookup("kip.image").replace("/kip:", "/gateway:")
    assert lookup("image") == f"ghcr.io/kernel-image-puller/gateway:{app_version}"


def test_service_ports_default():
    assert lookup("service.ports") == [
        {"name": "http", "port": 8888, "targetPort": 8888},
        {"name": "http-response", "port": 8877, "targetPort": 8877},
    ]


def test_allowed_kernels_default_holds_the_default_kernel():
    allowed = lookup("kernel.allowedKernels")
    assert "python_kubernetes" in allowed and "r_kubernetes" in allowed and len(allowed) == 9


def test_schema_types_every_value():
    """Every key of values.yaml is described by values.schema.json (additionalProperties is
    false on every object the chart defines, so a typo fails at install time)."""
    schema = chart().schema

    def walk(node, sch, path):
        if "$ref" in sch:
            sch = schema["definitions"][sch["$ref"].rsplit("/", 1)[-1]]
        if isinstance(node, dict) and "properties" in sch:
            assert sch.get("additionalProperties") is False, f"{path or 'top'}: not closed"
            for k, v in node.items():
                assert k in sch["properties"], f"{path}.{k} is not in values.schema.json"
                walk(v, sch["properties"][k], f"{path}.{k}".lstrip("."))

    walk(values(), schema, "")
    chart().validate_schema(values())


def test_readme_lists_every_documented_value_and_is_current():
    readme = (CHART / "README.md").read_text()
    for key in DOCUMENTED:
        assert f"| `{key}` |" in readme, f"{key} is not in the chart README's values table"
    result = subprocess.run(
        [sys.executable, str(REPO / "charts" / "gen-readme.py"), str(CHART), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_gen_readme_rejects_an_undocumented_key(tmp_path):
    bad = tmp_path / "chart"
    bad.mkdir()
    (bad / "values.yaml").write_text("# -- documented\na: 1\nb:\n  c: 2\n")
    (bad / "values.schema.json").write_text("{}")
    (bad / "README.md").write_text(
        "<!-- values-table:begin (generated by charts/gen-readme.py; do not edit) -->\n"
        "<!-- values-table:end -->\n"
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "charts" / "gen-readme.py"), str(bad), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "b.c" in result.stderr, result.stderr
