"""The chart rendered by a real `helm` binary (tests/scripts/install-deps.sh installs Helm 4 under
$KIP_TEST_TOOLS/bin), for what the Go SDK binding cannot do: `helm template --api-versions`.

The KIP's PodSecurityPolicy is rendered only where the cluster serves policy/v1beta1
PodSecurityPolicy (Kubernetes before 1.25). Those manifests are validated against the
Kubernetes 1.24 JSON schemas (strict: unknown fields are errors), taken by install-deps.sh from
kubernetes-validate 1.24.1, because the kubernetes-validate used by test_validate.py bundles 1.25
onwards, where PodSecurityPolicy no longer exists. Also checks that `helm template` and the SDK
render every scenario identically."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import helm_python as helm
import jsonschema
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT7

from conftest import CHART, NAMESPACE, RELEASE, Manifests, render
from scenarios import EVERYTHING, SCENARIOS

TOOLS = Path(os.environ.get("KIP_TEST_TOOLS", "/opt/kip-test"))
HELM = TOOLS / "bin" / "helm"
K8S_1_24 = TOOLS / "k8s-schemas" / "v1.24.0-local-strict"
PSP_API = "policy/v1beta1/PodSecurityPolicy"
SECCOMP = "seccomp.security.alpha.kubernetes.io/"

PSP_ON = {"kip": {"podSecurityPolicy": {"create": True}}}
PSP_ANNOTATED = {
    "kip": {
        "podSecurityPolicy": {
            "create": True,
            "annotations": {"example.com/owner": "data-platform", SECCOMP + "defaultProfileName": "docker/default"},
        }
    }
}


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def helm_template(tmp_path: Path, values: dict, api_versions: tuple[str, ...] = ()) -> Manifests:
    """`helm template enterprise-gateway CHART -n eg-ns -f values [--api-versions ...]`."""
    assert HELM.is_file(), f"{HELM} is missing (tests/scripts/install-deps.sh installs it)"
    values_file = tmp_path / "values.json"  # JSON is YAML
    values_file.write_text(json.dumps(values))
    home = tmp_path / "home"  # no user configuration, cache or repositories
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data")}
    cmd = [str(HELM), "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(values_file)]
    for api in api_versions:
        cmd += ["--api-versions", api]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return Manifests(d for d in yaml.safe_load_all(result.stdout) if d)


def test_helm_binary_is_the_sdk_major_version():
    out = subprocess.run([str(HELM), "version", "--short"], capture_output=True, text=True,
                         env={"HOME": "/nonexistent"}, timeout=60)
    assert out.returncode == 0, out.stderr
    cli_major = re.match(r"v(\d+)\.", out.stdout).group(1)
    assert cli_major == "4" and helm.helm_sdk_version().lstrip("v").split(".")[0] == cli_major, (
        out.stdout, helm.helm_sdk_version())


# ---- the PodSecurityPolicy where the cluster serves it ---------------------------------------


def test_psp_renders_with_annotations_and_use_permission(tmp_path):
    m = helm_template(tmp_path, PSP_ANNOTATED, (PSP_API,))
    psp = m.get("PodSecurityPolicy", "kip-psp")
    assert psp["apiVersion"] == "policy/v1beta1"
    assert "namespace" not in psp["metadata"]  # cluster-scoped
    assert psp["metadata"]["labels"]["component"] == "kernel-image-puller"
    # The values' annotations, with the chart's seccomp defaults under them (values win).
    assert psp["metadata"]["annotations"] == {
        "example.com/owner": "data-platform",
        SECCOMP + "allowedProfileNames": "runtime/default",
        SECCOMP + "defaultProfileName": "docker/default",
    }
    # kip-controller may only `use` kip-psp; it is bound to the KIP's service account.
    role = m.get("ClusterRole", "kip-controller")
    assert role["rules"] == [
        {"apiGroups": ["policy"], "resources": ["podsecuritypolicies"], "resourceNames": ["kip-psp"], "verbs": ["use"]}
    ]
    binding = m.get("ClusterRoleBinding", "enterprise-gateway-kip")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kip-controller"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kernel-image-puller-sa", "namespace": NAMESPACE}]
    sa = m.get("ServiceAccount", "kernel-image-puller-sa")
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert m.get("DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "kernel-image-puller-sa"
    # Exactly these three objects are added to the render without the API.
    without = helm_template(tmp_path, PSP_ANNOTATED)
    assert sorted(m.kinds()) == sorted(without.kinds() + ["PodSecurityPolicy", "ClusterRole", "ClusterRoleBinding"])


def test_psp_default_annotations_are_the_seccomp_profile_of_the_kip_pod(tmp_path):
    m = helm_template(tmp_path, PSP_ON, (PSP_API,))
    assert m.get("PodSecurityPolicy")["metadata"]["annotations"] == {
        SECCOMP + "allowedProfileNames": "runtime/default",
        SECCOMP + "defaultProfileName": "runtime/default",
    }


def test_psp_follows_the_service_account_name_and_the_socket(tmp_path):
    values = {"kip": {"podSecurityPolicy": {"create": True}, "serviceAccountName": "puller",
                      "criSocket": "/run/containerd/containerd.sock"}}
    m = helm_template(tmp_path, values, (PSP_API,))
    assert m.get("ClusterRoleBinding", "enterprise-gateway-kip")["subjects"][0]["name"] == "puller"
    assert m.get("PodSecurityPolicy")["spec"]["allowedHostPaths"] == [
        {"pathPrefix": "/run/containerd/containerd.sock", "readOnly": True},
        {"pathPrefix": "/var/lib/containerd", "readOnly": True},
    ]


def admission_problems(psp: dict, daemonset: dict) -> list[str]:
    """What PodSecurityPolicy admission would refuse in the DaemonSet's pod under this policy
    (the parts of the policy the chart sets)."""
    spec, pod = psp["spec"], daemonset["spec"]["template"]["spec"]
    problems = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host) and not spec.get(host):
            problems.append(host)
    token = pod.get("automountServiceAccountToken", True)
    volumes = [next(k for k in v if k != "name") for v in pod.get("volumes", [])] + (["projected"] if token else [])
    problems += [f"volume type {t}" for t in volumes if t not in spec["volumes"]]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v}
    allowed = spec.get("allowedHostPaths", [])
    profile = {"RuntimeDefault": "runtime/default"}.get(pod.get("securityContext", {}).get("seccompProfile", {}).get("type"))
    allowed_profiles = psp["metadata"].get("annotations", {}).get(SECCOMP + "allowedProfileNames", "")
    if profile and profile not in allowed_profiles.split(","):
        problems.append(f"seccomp profile {profile}")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        if sc.get("privileged") and not spec.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation", True) and not spec.get("allowPrivilegeEscalation", True):
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if spec.get("readOnlyRootFilesystem") and sc.get("readOnlyRootFilesystem") is False:
            problems.append(f"{c['name']}: writable root filesystem")
        dropped = set(sc.get("capabilities", {}).get("drop", []))
        problems += [f"{c['name']}: {cap} not dropped" for cap in spec.get("requiredDropCapabilities", []) if cap not in dropped]
        problems += [f"{c['name']}: adds {cap}" for cap in sc.get("capabilities", {}).get("add", [])
                     if cap not in spec.get("allowedCapabilities", [])]
        problems += [f"{c['name']}: hostPort" for p in c.get("ports", []) if p.get("hostPort") and not spec.get("hostPorts")]
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in host_paths:
                continue
            path = host_paths[mount["name"]].rstrip("/")
            ok = [a for a in allowed if path == a["pathPrefix"].rstrip("/") or path.startswith(a["pathPrefix"].rstrip("/") + "/")]
            if not ok:
                problems.append(f"{c['name']}: host path {path} not allowed")
            elif all(a.get("readOnly") for a in ok) and not mount.get("readOnly"):
                problems.append(f"{c['name']}: host path {path} mounted writable")
    return problems


@pytest.mark.parametrize("scenario", ["psp", "everything"])
def test_psp_admits_the_kip_pod(tmp_path, scenario):
    values = PSP_ON if scenario == "psp" else merged(EVERYTHING, PSP_ON)
    m = helm_template(tmp_path, values, (PSP_API,))
    psp, ds = m.get("PodSecurityPolicy"), m.get("DaemonSet")
    assert admission_problems(psp, ds) == []
    # The check finds what the policy forbids.
    writable = json.loads(json.dumps(ds))
    writable["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] = False
    bare = json.loads(json.dumps(psp))
    bare["metadata"]["annotations"] = {}
    socket = values["kip"].get("criSocket", "/var/run/docker.sock")
    assert admission_problems(psp, writable) == [f"kernel-image-puller: host path {socket} mounted writable"]
    assert admission_problems(bare, ds) == ["seccomp profile runtime/default"]


# ---- no PodSecurityPolicy where the cluster does not serve it, or when not asked for ----------


@pytest.mark.parametrize(
    "values, api_versions",
    [
        (PSP_ANNOTATED, ()),  # Kubernetes 1.25+: no policy/v1beta1 PodSecurityPolicy
        (PSP_ANNOTATED, ("policy/v1/PodDisruptionBudget",)),
        ({}, (PSP_API,)),  # not asked for
        (merged(PSP_ON, {"global": {"rbac": False}}), (PSP_API,)),  # no RBAC objects at all
        (merged(PSP_ON, {"kip": {"serviceAccountName": ""}}), (PSP_API,)),  # nothing to bind
    ],
    ids=["no-api", "other-api", "not-created", "no-rbac", "no-service-account"],
)
def test_no_psp(tmp_path, values, api_versions):
    m = helm_template(tmp_path, values, api_versions)
    assert m.has("DaemonSet")
    assert not m.has("PodSecurityPolicy")
    assert not m.has("ClusterRole", "kip-controller") and not m.has("ClusterRoleBinding", "enterprise-gateway-kip")


# ---- Kubernetes 1.24 schemas ---------------------------------------------------------------


def k8s_1_24_validator(doc: dict) -> jsonschema.Draft7Validator:
    """The strict 1.24 schema of the document's kind (file names as in kubernetes-validate:
    kind-group-version.json, group without its domain)."""
    assert K8S_1_24.is_dir(), f"{K8S_1_24} is missing (tests/scripts/install-deps.sh installs it)"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    schema_file = K8S_1_24 / f"{doc['kind'].lower()}-{group_version}.json"
    assert schema_file.is_file(), f"no Kubernetes 1.24 schema for {doc['apiVersion']} {doc['kind']}"
    definitions = json.loads((K8S_1_24 / "_definitions.json").read_text())
    registry = Registry().with_resource("_definitions.json", DRAFT7.create_resource(definitions))
    return jsonschema.Draft7Validator(json.loads(schema_file.read_text()), registry=registry)


def errors_1_24(doc: dict) -> list[str]:
    return [f"{doc['kind']} {doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
            for e in k8s_1_24_validator(doc).iter_errors(doc)]


@pytest.mark.parametrize("scenario", ["psp", "psp-annotated", "everything", "values-rbac"])
def test_psp_renders_validate_against_kubernetes_1_24(tmp_path, scenario):
    values = {"psp": PSP_ON, "psp-annotated": PSP_ANNOTATED, "everything": merged(EVERYTHING, PSP_ON),
              "values-rbac": SCENARIOS["values-rbac"]}[scenario]
    m = helm_template(tmp_path, values, (PSP_API,))
    assert m.has("PodSecurityPolicy", "kip-psp")
    assert [e for doc in m for e in errors_1_24(doc)] == []


def test_kubernetes_1_24_schema_rejects_an_invalid_psp(tmp_path):
    psp = helm_template(tmp_path, PSP_ON, (PSP_API,)).get("PodSecurityPolicy")
    assert errors_1_24(psp) == []
    typo = json.loads(json.dumps(psp))
    typo["spec"]["allowedHostPaths"][0]["readonly"] = True
    wrong_type = json.loads(json.dumps(psp))
    wrong_type["spec"]["hostNetwork"] = "no"
    missing = json.loads(json.dumps(psp))
    del missing["spec"]["runAsUser"]
    for doc, named in ((typo, "readonly"), (wrong_type, "hostNetwork"), (missing, "runAsUser")):
        found = errors_1_24(doc)
        assert found and named in " ".join(found), found


# ---- the SDK against the binary --------------------------------------------------------------


def canonical(docs) -> list[str]:
    return sorted(json.dumps(d, sort_keys=True) for d in docs)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_template_equals_the_sdk_render(tmp_path, scenario):
    cli = helm_template(tmp_path, SCENARIOS[scenario])
    sdk = render(SCENARIOS[scenario])
    assert len(cli) == len(sdk) > 0
    assert canonical(cli) == canonical(sdk)
