"""What the rendered manifests contain, for the documented values and the doc's example files."""

from __future__ import annotations

import base64
import json

import pytest

from conftest import NAMESPACE, RELEASE, container, env_of, fixture_values, render
from scenarios import EVERYTHING

GATEWAY_KINDS = {"Deployment", "Service"}
POD_IP = {"fieldRef": {"fieldPath": "status.podIP"}}
TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


# ---- defaults ------------------------------------------------------------------------------


def test_defaults_render_the_documented_resources():
    m = render()
    assert m.kinds() == sorted(
        ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "DaemonSet", "Deployment"]
        + ["Service", "ServiceAccount", "ServiceAccount"]
    )
    assert m.has("ClusterRole", "enterprise-gateway-controller")
    assert m.has("ClusterRole", "kernel-controller")
    assert m.has("ServiceAccount", "enterprise-gateway-sa")
    assert m.has("ServiceAccount", "kernel-image-puller-sa")
    for d in m:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE, d["kind"]


def test_gateway_env_defaults():
    dep = render().get("Deployment", "enterprise-gateway")
    env = env_of(container(dep, "enterprise-gateway"))
    assert env == {
        "EG_PORT": "8888",
        "EG_RESPONSE_PORT": "8877",
        "EG_RESPONSE_IP": POD_IP,
        "EG_NAMESPACE": NAMESPACE,
        "EG_KERNEL_CLUSTER_ROLE": "kernel-controller",
        "EG_SHARED_NAMESPACE": "False",
        "EG_MIRROR_WORKING_DIRS": "False",
        "EG_CULL_IDLE_TIMEOUT": "3600",
        "EG_CULL_CONNECTED": "False",
        "EG_LOG_LEVEL": "DEBUG",
        "EG_KERNEL_LAUNCH_TIMEOUT": "60",
        "EG_KERNEL_INFO_TIMEOUT": "60",
        "EG_ALLOWED_KERNELS": json.dumps(
            [
                "r_kubernetes",
                "python_kubernetes",
                "python_tf_kubernetes",
                "python_tf_gpu_kubernetes",
                "scala_kubernetes",
                "spark_r_kubernetes",
                "spark_python_kubernetes",
                "spark_scala_kubernetes",
                "spark_python_operator",
            ],
            separators=(",", ":"),
        ),
        "EG_DEFAULT_KERNEL_NAME": "python_kubernetes",
        "EG_DEFAULT_KERNEL_SERVICE_ACCOUNT_NAME": "default",
        "EG_ADMIN_ADDR": "0.0.0.0:9091",
        "EG_SHUTDOWN_GRACE": "10",
        "EG_INHERITED_ENVS": "PATH",
    }
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 1
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["serviceAccountName"] == "enterprise-gateway-sa"
    assert container(dep)["image"] == "ghcr.io/kernel-image-puller/gateway:0.1.0"
    assert container(dep)["imagePullPolicy"] == "IfNotPresent"
    assert [(p["name"], p["containerPort"]) for p in container(dep)["ports"]] == [
        ("http", 8888), ("response", 8877), ("admin", 9091)
    ]
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert "initContainers" not in spec


def test_gateway_probes_metrics_and_security_defaults():
    dep = render().get("Deployment", "enterprise-gateway")
    spec = dep["spec"]["template"]["spec"]
    c = container(dep, "enterprise-gateway")
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 10, "failureThreshold": 3
    }
    assert c["livenessProbe"] == {
        "httpGet": {"path": "/livez", "port": "admin"},
        "initialDelaySeconds": 10, "periodSeconds": 20, "failureThreshold": 6,
    }
    assert "startupProbe" not in c
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9091", "prometheus.io/path": "/metrics"
    }
    # The image's user; nothing to write outside /tmp.
    assert c["securityContext"] == {
        "runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert spec["terminationGracePeriodSeconds"] > int(env_of(c)["EG_SHUTDOWN_GRACE"])
    # The Service stays the upstream chart's: the admin endpoint is scraped per pod.
    assert [p["name"] for p in render().get("Service")["spec"]["ports"]] == ["http", "http-response"]


def test_gateway_probe_and_admin_values():
    m = render({"deployment": {
        "adminPort": 9100,
        "prometheusScrape": False,
        "readinessProbe": {"periodSeconds": 3, "timeoutSeconds": 2},
        "livenessProbe": {"enabled": False},
        "shutdownGrace": 50,
        "terminationGracePeriodSeconds": 60,
    }})
    dep = m.get("Deployment")
    c = container(dep)
    env = env_of(c)
    assert env["EG_ADMIN_ADDR"] == "0.0.0.0:9100" and env["EG_SHUTDOWN_GRACE"] == "50"
    assert ("admin", 9100) in [(p["name"], p["containerPort"]) for p in c["ports"]]
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "admin"},
        "periodSeconds": 3, "timeoutSeconds": 2, "failureThreshold": 3,
    }
    assert "livenessProbe" not in c
    assert "annotations" not in dep["spec"]["template"]["metadata"]
    # The auth token's checksum and the scrape annotations share the pod's annotations.
    annotations = render({"authToken": "t"}).get("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"checksum/auth-token", "prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"}


@pytest.mark.parametrize(
    "values",
    [
        {"image": "elyra/enterprise-gateway:3.2.3"},
        {"image": "private.io/elyra/enterprise-gateway:dev"},
        {"image": "registry.example/eg:3.3.0", "deployment": {"imageKind": "upstream"}},
    ],
)
def test_upstream_image_gets_tcp_probes_and_its_own_user(values):
    dep = render(values).get("Deployment")
    spec = dep["spec"]["template"]["spec"]
    c = container(dep)
    env = env_of(c)
    assert c["image"] == values["image"]
    assert "EG_ADMIN_ADDR" not in env and "EG_SHUTDOWN_GRACE" not in env
    assert env["EG_RESPONSE_IP"] == POD_IP and env["EG_RESPONSE_PORT"] == "8877"
    assert [p["name"] for p in c["ports"]] == ["http", "response"]
    assert c["readinessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 10, "failureThreshold": 3}
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert "annotations" not in dep["spec"]["template"]["metadata"]
    assert "volumes" not in spec and "volumeMounts" not in c
    # The admin port and shutdown-grace checks concern this project's gateway only.
    render({**values, "deployment": {**values.get("deployment", {}), "adminPort": 8888, "shutdownGrace": 40}})


def test_image_kind_gateway_overrides_the_name():
    c = container(render({"image": "mirror.example/elyra/enterprise-gateway:rust",
                          "deployment": {"imageKind": "gateway"}}).get("Deployment"))
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["securityContext"]["runAsUser"] == 65532


def test_gateway_cluster_role_covers_the_kubernetes_launcher():
    role = render().get("ClusterRole", "enterprise-gateway-controller")

    def verbs(group: str, resource: str, name: str | None = None) -> set[str]:
        found = set()
        for rule in role["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"]:
                if name is None or name in rule.get("resourceNames", [name]):
                    found |= set(rule["verbs"])
        return found

    assert verbs("", "pods") == {"get", "list", "watch", "create", "delete"}
    assert verbs("", "pods/status") == {"get"}
    assert verbs("", "namespaces") == {"get", "list", "create", "delete"}
    for resource in ("services", "configmaps", "secrets", "persistentvolumeclaims", "persistentvolumes"):
        assert verbs("", resource) == {"get", "list", "create", "delete"}, resource
    assert verbs("", "events") == verbs("events.k8s.io", "events") == {"list", "watch"}
    assert verbs("rbac.authorization.k8s.io", "rolebindings") == {"get", "list", "create", "delete"}
    # `bind` on the kernel role only, so the RoleBinding to it needs no escalation.
    assert verbs("rbac.authorization.k8s.io", "clusterroles", "kernel-controller") == {"bind"}
    assert verbs("rbac.authorization.k8s.io", "clusterroles", "cluster-admin") == set()
    bind = [r for r in role["rules"] if "bind" in r["verbs"]]
    assert bind == [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                     "resourceNames": ["kernel-controller"], "verbs": ["bind"]}]
    assert verbs("sparkoperator.k8s.io", "sparkapplications") == {"get", "list", "watch", "create", "delete"}
    # No wildcard anywhere.
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])


def test_kernel_cluster_role_is_unchanged():
    role = render().get("ClusterRole", "kernel-controller")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list", "create", "delete"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "create"]},
        {"apiGroups": [""], "resources": ["services", "persistentvolumeclaims"], "verbs": ["list"]},
    ]
    gateway = render().get("ClusterRoleBinding", "enterprise-gateway-controller")
    assert gateway["roleRef"]["name"] == "enterprise-gateway-controller"
    assert gateway["subjects"] == [{"kind": "ServiceAccount", "name": "enterprise-gateway-sa", "namespace": NAMESPACE}]


def test_service_ports_type_and_affinity():
    svc = render().get("Service", "enterprise-gateway")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert svc["spec"]["selector"] == {"gateway-selector": "enterprise-gateway"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 8888, 8888),
        ("http-response", 8877, 8877),
    ]
    assert "externalIPs" not in svc["spec"]


def test_kip_env_defaults():
    ds = render().get("DaemonSet", "kernel-image-puller")
    env = env_of(container(ds, "kernel-image-puller"))
    assert env == {
        "KIP_GATEWAY_HOST": f"http://enterprise-gateway.{NAMESPACE}:8888",
        "KIP_VALIDATE_CERT": "false",
        "KIP_INTERVAL": "300",
        "KIP_NUM_PULLERS": "2",
        "KIP_NUM_RETRIES": "3",
        "KIP_PULL_TIMEOUT": "600",
        "KIP_FETCH_TIMEOUT": "60",
        "KIP_PULL_POLICY": "IfNotPresent",
        "KIP_CRI_ENDPOINT": "unix:///var/run/docker.sock",
        "KIP_CONTAINER_RUNTIME": "auto",
        "KIP_DEFAULT_CONTAINER_REGISTRY": "docker.io",
        "KIP_LOG_LEVEL": "DEBUG",
        "KIP_LOG_FORMAT": "plain",
        "KIP_IMAGE_FETCHER": "KernelSpecsFetcher",
        "KIP_INTERNAL_FETCHERS": "KernelSpecsFetcher",
        "KIP_IMAGES": "",
        "KIP_CM_NAMESPACE": NAMESPACE,
        "KIP_CM_NAME": "kernel-images",
        "KIP_CM_KEY_NAME": "image-names",
        "KIP_ADMIN_ADDR": "0.0.0.0:9090",
        "KIP_SHUTDOWN_GRACE": "10",
        "KIP_MAX_DISK_USAGE_PERCENT": "85",
    }


def test_kip_pod_socket_probes_security_resources():
    ds = render().get("DaemonSet", "kernel-image-puller")
    spec = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert ds["spec"]["selector"] == {"matchLabels": {"name": "kernel-image-puller"}}
    assert spec["serviceAccountName"] == "kernel-image-puller-sa"
    assert spec["automountServiceAccountToken"] is False
    assert "priorityClassName" not in spec
    assert spec["volumes"] == [
        {"name": "cri-socket", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}},
        {"name": "image-fs", "hostPath": {"path": "/var/lib/docker", "type": "Directory"}},
    ]
    assert c["volumeMounts"] == [
        {"name": "cri-socket", "mountPath": "/var/run/docker.sock", "readOnly": True},
        {"name": "image-fs", "mountPath": "/var/lib/docker", "readOnly": True},
    ]
    assert c["ports"] == [{"name": "admin", "containerPort": 9090, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    assert "livenessProbe" not in c
    assert c["resources"] == {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}
    sc = c["securityContext"]
    assert sc["runAsUser"] == 0 and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["terminationGracePeriodSeconds"] > int(env_of(c)["KIP_SHUTDOWN_GRACE"])


# ---- values and their effects ------------------------------------------------------------------


def test_kip_values_map_to_env():
    ds = render(
        {
            "logLevel": "INFO",
            "kip": {
                "serviceName": "gw",
                "server": {"protocol": "https", "port": 443, "validate_cert": True},
                "interval": 60,
                "numPullers": 5,
                "numRetries": 7,
                "pullPolicy": "Always",
                "criSocket": "/run/containerd/containerd.sock",
                "containerRuntime": "containerd",
                "defaultContainerRegistry": "quay.io",
                "fetcher": "StaticListFetcher",
                "images": ["python:3.12", " elyra/kernel-py:3.2.3 ", ""],
                "logFormat": "json",
                "adminPort": 9191,
                "shutdownGrace": 20,
                "terminationGracePeriodSeconds": 45,
                "priorityClassName": "system-node-critical",
            },
        }
    ).get("DaemonSet")
    c = container(ds)
    env = env_of(c)
    assert env["KIP_GATEWAY_HOST"] == f"https://gw.{NAMESPACE}:443"
    assert env["KIP_VALIDATE_CERT"] == "true"
    assert env["KIP_INTERVAL"] == "60"
    assert env["KIP_NUM_PULLERS"] == "5"
    assert env["KIP_NUM_RETRIES"] == "7"
    assert env["KIP_PULL_POLICY"] == "Always"
    assert env["KIP_CRI_ENDPOINT"] == "unix:///run/containerd/containerd.sock"
    assert env["KIP_CONTAINER_RUNTIME"] == "containerd"
    assert env["KIP_DEFAULT_CONTAINER_REGISTRY"] == "quay.io"
    assert env["KIP_IMAGE_FETCHER"] == "StaticListFetcher"
    assert env["KIP_IMAGES"] == "python:3.12,elyra/kernel-py:3.2.3"
    assert env["KIP_LOG_LEVEL"] == "INFO"
    assert env["KIP_LOG_FORMAT"] == "json"
    assert env["KIP_ADMIN_ADDR"] == "0.0.0.0:9191"
    assert env["KIP_SHUTDOWN_GRACE"] == "20"
    assert c["ports"][0]["containerPort"] == 9191
    spec = ds["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 45
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["volumes"][0]["hostPath"] == {"path": "/run/containerd/containerd.sock", "type": "Socket"}
    assert c["volumeMounts"][0]["mountPath"] == "/run/containerd/containerd.sock"


def test_kip_disk_guard_and_extra_env():
    def pod(kip: dict) -> tuple[dict, dict]:
        ds = render({"kip": kip}).get("DaemonSet")
        c = container(ds)
        volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        return env_of(c), {"volume": volumes.get("image-fs"), "mount": mounts.get("image-fs")}

    # auto: the runtime's data root, by the socket's name.
    table = [
        ({"criSocket": "/run/containerd/containerd.sock"}, "/var/lib/containerd"),
        ({"criSocket": "/var/run/crio/crio.sock"}, "/var/lib/containerd"),
        ({"criSocket": "/var/run/docker.sock"}, "/var/lib/docker"),
        ({"imageFsHostPath": "/data/containerd"}, "/data/containerd"),
        ({"imageFsHostPath": ""}, None),
    ]
    for values, path in table:
        _, fs = pod(values)
        if path is None:
            assert fs == {"volume": None, "mount": None}, values
        else:
            assert fs["volume"]["hostPath"] == {"path": path, "type": "Directory"}, values
            assert fs["mount"] == {"name": "image-fs", "mountPath": path, "readOnly": True}, values

    ds = render({"kip": {"registryCA": {"configMap": "corp-ca", "key": "bundle.pem"}}}).get("DaemonSet")
    c = container(ds)
    assert env_of(c)["KIP_REGISTRY_CA_FILE"] == "/etc/kip/registry-ca/bundle.pem"
    assert {"name": "registry-ca", "mountPath": "/etc/kip/registry-ca", "readOnly": True} in c["volumeMounts"]
    assert {"name": "registry-ca", "configMap": {"name": "corp-ca", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}} \
        in ds["spec"]["template"]["spec"]["volumes"]
    assert "KIP_REGISTRY_CA_FILE" not in env_of(container(render().get("DaemonSet")))

    env, _ = pod({"maxDiskUsagePercent": 90.5, "extraEnv": {"KIP_WATCH_SECONDS": 30, "KIP_CONTAINERD_NAMESPACE": "k8s.io"}})
    assert env["KIP_MAX_DISK_USAGE_PERCENT"] == "90.5"
    assert env["KIP_WATCH_SECONDS"] == "30"
    assert env["KIP_CONTAINERD_NAMESPACE"] == "k8s.io"


def test_kip_images_and_fetchers_accept_comma_strings():
    env = env_of(
        container(
            render(
                {
                    "kip": {
                        "fetcher": "CombinedImagesFetcher",
                        "internalFetcher": "KernelSpecsFetcher, StaticListFetcher",
                        "images": "a:1, b:2,",
                    }
                }
            ).get("DaemonSet")
        )
    )
    assert env["KIP_INTERNAL_FETCHERS"] == "KernelSpecsFetcher,StaticListFetcher"
    assert env["KIP_IMAGES"] == "a:1,b:2"


def test_configmap_fetcher_gets_read_access_to_its_configmap_only():
    m = render({"kip": {"fetcher": "CombinedImagesFetcher", "internalFetcher": ["ConfigMapImagesFetcher"],
                        "configMap": {"namespace": "images", "name": "list", "key": "k"}}})
    role = m.get("Role", "kernel-image-puller-configmap")
    assert role["metadata"]["namespace"] == "images"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["list"], "verbs": ["get"]}
    ]
    rb = m.get("RoleBinding", "kernel-image-puller-configmap")
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "kernel-image-puller-sa", "namespace": NAMESPACE}]
    ds = m.get("DaemonSet")
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    env = env_of(container(ds))
    assert (env["KIP_CM_NAMESPACE"], env["KIP_CM_NAME"], env["KIP_CM_KEY_NAME"]) == ("images", "list", "k")
    # Without the ConfigMap fetcher the KIP has no role at all.
    assert not render().has("Role") and not render().has("RoleBinding")


def test_pull_secrets_are_mounted_into_the_kip_and_listed():
    m = render({"global": {"imagePullSecrets": ["a-key"]}, "kip": {"pullSecrets": ["b-key", "a-key"]}})
    ds = m.get("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert spec["imagePullSecrets"] == [{"name": "a-key"}]
    assert env_of(c)["KIP_DOCKER_CONFIG"] == (
        "/etc/kip/pull-secrets/a-key/.dockerconfigjson,/etc/kip/pull-secrets/b-key/.dockerconfigjson"
    )
    secret_volumes = {v["secret"]["secretName"]: v for v in spec["volumes"] if "secret" in v}
    assert set(secret_volumes) == {"a-key", "b-key"}
    assert secret_volumes["b-key"]["secret"]["items"] == [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/kip/pull-secrets/b-key"]["readOnly"] is True
    assert m.get("ServiceAccount", "enterprise-gateway-sa")["imagePullSecrets"] == [{"name": "a-key"}]
    assert m.get("ServiceAccount", "kernel-image-puller-sa")["imagePullSecrets"] == [{"name": "a-key"}]
    assert m.get("Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "a-key"}]
    assert "KIP_DOCKER_CONFIG" not in env_of(container(render().get("DaemonSet")))


def test_auth_token_is_a_secret_for_both_pods():
    m = render({"authToken": "12345"})
    secret = m.get("Secret", f"{RELEASE}-auth-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == "12345"
    ref = {"secretKeyRef": {"name": f"{RELEASE}-auth-token", "key": "token"}}
    assert env_of(container(m.get("Deployment")))["EG_AUTH_TOKEN"] == ref
    assert env_of(container(m.get("DaemonSet")))["KIP_AUTH_TOKEN"] == ref
    assert not render().has("Secret")


def test_gateway_values_map_to_env_and_pod():
    m = render(EVERYTHING)
    dep = m.get("Deployment")
    spec = dep["spec"]["template"]["spec"]
    env = env_of(container(dep))
    assert env["EG_KERNEL_CLUSTER_ROLE"] == "my-kernel-role"
    assert env["EG_SHARED_NAMESPACE"] == "True"
    assert env["EG_MAX_KERNELS"] == "20" and env["EG_LIST_KERNELS"] == "true"
    assert list(env)[-3:] == ["EG_INHERITED_ENVS", "EG_LIST_KERNELS", "EG_MAX_KERNELS"]
    assert dep["spec"]["replicas"] == 2
    assert spec["terminationGracePeriodSeconds"] == 60
    assert container(dep)["resources"] == EVERYTHING["deployment"]["resources"]
    assert spec["tolerations"] == EVERYTHING["deployment"]["tolerations"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["affinity"] == EVERYTHING["deployment"]["affinity"]
    ds_spec = m.get("DaemonSet")["spec"]["template"]["spec"]
    assert ds_spec["tolerations"] == [{"operator": "Exists"}]
    assert ds_spec["affinity"] == EVERYTHING["kip"]["affinity"]
    assert container(m.get("DaemonSet"))["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert m.get("ServiceAccount", "enterprise-gateway-sa")["metadata"]["annotations"] == EVERYTHING["deployment"]["annotations"]
    assert m.get("ServiceAccount", "kernel-image-puller-sa")["metadata"]["annotations"] == EVERYTHING["kip"]["annotations"]


def test_response_port_follows_service_ports():
    m = render({"service": {"ports": [{"name": "web", "port": 80, "targetPort": 9999},
                                      {"name": "resp", "port": 7777}]}})
    c = container(m.get("Deployment"))
    env = env_of(c)
    assert (env["EG_PORT"], env["EG_RESPONSE_PORT"]) == ("9999", "7777")
    # Container ports keep fixed names (the probes name them); the Service's names are the values'.
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http", 9999), ("response", 7777), ("admin", 9091)]
    svc = m.get("Service")
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, 9999), (7777, 7777)]


def test_custom_kernel_cluster_role_is_the_one_created_and_bindable():
    m = render({"kernel": {"clusterRole": "team-kernels"}})
    assert m.has("ClusterRole", "team-kernels") and not m.has("ClusterRole", "kernel-controller")
    gw_role = m.get("ClusterRole", "enterprise-gateway-controller")
    assert {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
            "resourceNames": ["team-kernels"], "verbs": ["bind"]} in gw_role["rules"]


def test_node_port_load_balancer_and_external_ip():
    svc = render(EVERYTHING).get("Service")
    assert svc["spec"]["type"] == "NodePort"
    assert [p["nodePort"] for p in svc["spec"]["ports"]] == [32652, 30481]
    assert svc["spec"]["externalIPs"] == ["192.0.2.10"]
    assert render({"service": {"type": "LoadBalancer"}}).get("Service")["spec"]["type"] == "LoadBalancer"


def test_ingress_values():
    ing = render(EVERYTHING).get("Ingress", "enterprise-gateway-ingress")
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    assert ing["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
    assert ing["spec"]["ingressClassName"] == "nginx"
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "eg.example.com"
    assert rule["http"]["paths"] == [
        {"path": "/gateway", "pathType": "ImplementationSpecific",
         "backend": {"service": {"name": "enterprise-gateway", "port": {"number": 8888}}}}
    ]
    assert ing["spec"]["tls"] == [{"secretName": "eg-tls", "hosts": ["eg.example.com"]}]


def test_common_labels_on_every_resource_and_pod():
    m = render(EVERYTHING)
    assert len(m) == 14  # every kind the chart renders on a current cluster
    for d in m:
        labels = d["metadata"]["labels"]
        assert labels["team"] == "data" and labels["cost-center"] == "42", d["kind"]
        if d["kind"] in ("Deployment", "DaemonSet"):
            assert d["spec"]["template"]["metadata"]["labels"]["team"] == "data"


def test_two_secrets_render_two_secret_documents():
    m = render(EVERYTHING)
    secrets = [s for s in m.all("Secret") if s["type"] == "kubernetes.io/dockerconfigjson"]
    assert sorted(s["metadata"]["name"] for s in secrets) == ["private-registry-key", "second-registry-key"]
    for s in secrets:
        assert s["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert json.loads(base64.b64decode(s["data"][".dockerconfigjson"]))["auths"]["private.io"]


# ---- kernelspec sources ---------------------------------------------------------------------


def test_kernelspecs_from_an_image():
    spec = render({"kernelspecs": {"image": "reg/ks:1"}}).get("Deployment")["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["image"] == "reg/ks:1" and init["imagePullPolicy"] == "Always"
    assert init["command"] == ["cp", "-r", "/kernels", "/usr/local/share/jupyter"]
    assert spec["volumes"] == [TMP_VOLUME, {"name": "image-kernelspecs", "emptyDir": {"medium": "Memory"}}]
    mounts = spec["containers"][0]["volumeMounts"]
    assert mounts == init["volumeMounts"] + [TMP_MOUNT] == [
        {"name": "image-kernelspecs", "mountPath": "/usr/local/share/jupyter/kernels"}, TMP_MOUNT
    ]


def test_kernelspecs_from_nfs_and_pvc():
    spec = render({"nfs": {"enabled": True, "internalServerIPAddress": "10.0.0.5"}}).get("Deployment")["spec"]["template"]["spec"]
    assert spec["volumes"] == [TMP_VOLUME, {"name": "kernelspecs", "nfs": {"server": "10.0.0.5", "path": "/usr/local/share/jupyter/kernels"}}]
    assert "initContainers" not in spec
    spec = render({"kernelspecsPvc": {"enabled": True, "name": "ks"}}).get("Deployment")["spec"]["template"]["spec"]
    assert spec["volumes"] == [TMP_VOLUME, {"name": "kernelspecs", "persistentVolumeClaim": {"claimName": "ks"}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "kernelspecs", "mountPath": "/usr/local/share/jupyter/kernels"}, TMP_MOUNT]
    # Upstream's image: the kernelspec volume alone.
    spec = render({"image": "elyra/enterprise-gateway:3.2.3", "kernelspecsPvc": {"enabled": True, "name": "ks"}}).get("Deployment")["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "kernelspecs", "persistentVolumeClaim": {"claimName": "ks"}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "kernelspecs", "mountPath": "/usr/local/share/jupyter/kernels"}]


@pytest.mark.parametrize(
    "values, named",
    [
        ({"nfs": {"enabled": True, "internalServerIPAddress": "1.2.3.4"}, "kernelspecs": {"image": "ks:1"}},
         ["kernelspecs.image", "nfs.enabled", "mutually exclusive"]),
        ({"nfs": {"enabled": True, "internalServerIPAddress": "1.2.3.4"}, "kernelspecsPvc": {"enabled": True, "name": "p"}},
         ["nfs.enabled", "kernelspecsPvc.enabled"]),
        ({"kernelspecs": {"image": "ks:1"}, "kernelspecsPvc": {"enabled": True, "name": "p"}},
         ["kernelspecs.image", "kernelspecsPvc.enabled"]),
        ({"nfs": {"enabled": True}}, ["nfs.internalServerIPAddress"]),
        ({"kernelspecsPvc": {"enabled": True}}, ["kernelspecsPvc.name"]),
        ({"ingress": {"enabled": True}}, ["ingress.hostName"]),
        ({"kernel": {"defaultKernelName": "nope"}}, ["kernel.defaultKernelName", "nope"]),
        ({"kip": {"fetcher": "StaticListFetcher"}}, ["kip.images"]),
        ({"kip": {"shutdownGrace": 30}}, ["kip.shutdownGrace", "kip.terminationGracePeriodSeconds"]),
        ({"deployment": {"shutdownGrace": 30}}, ["deployment.shutdownGrace", "deployment.terminationGracePeriodSeconds"]),
        ({"deployment": {"adminPort": 8877}}, ["deployment.adminPort", "8877"]),
        ({"deployment": {"imageKind": "python"}}, ["deployment/imageKind"]),
        ({"deployment": {"readinessProbe": {"httpGet": {"port": 1}}}}, ["deployment/readinessProbe", "httpGet"]),
        ({"imagePullSecretsCreate": {"enabled": True, "secrets": ["only-a-name"]}},
         ["imagePullSecretsCreate.secrets[0].data", "only-a-name"]),
        ({"service": {"ports": [{"name": "http", "port": 8888, "nodePort": 30000},
                                {"name": "r", "port": 8877}]}}, ["service.ports[0].nodePort", "ClusterIP"]),
        ({"kip": {"podSecurityPolicy": {"annotatons": {}}}}, ["kip/podSecurityPolicy", "annotatons"]),
        ({"kip": {"numPullers": 0}}, ["kip/numPullers"]),
        ({"kip": {"maxDiskUsagePercent": 0}}, ["kip/maxDiskUsagePercent"]),
        ({"kip": {"maxDiskUsagePercent": 101}}, ["kip/maxDiskUsagePercent"]),
        ({"kip": {"imageFsHostPath": "var/lib/containerd"}}, ["kip/imageFsHostPath"]),
        ({"kip": {"extraEnv": {"BAD NAME": "x"}}}, ["BAD NAME"]),
        ({"kip": {"fetcher": "SomeFetcher"}}, ["kip/fetcher"]),
        ({"kip": {"internalFetcher": "KernelSpecsFetcher,Bogus"}}, ["kip/internalFetcher"]),
        ({"service": {"type": "Nodeport"}}, ["service/type"]),
        ({"deployment": {"replicas": "two"}}, ["deployment/replicas"]),
    ],
)
def test_invalid_values_fail_naming_the_value(helm_error, values, named):
    message = helm_error(values)
    for part in named:
        assert part in message, message


# ---- enabled switches ---------------------------------------------------------------------


def test_enabled_false_removes_resources():
    m = render({"deployment": {"enabled": False}})
    assert not m.has("Deployment") and not m.has("Service")
    assert m.has("DaemonSet")
    m = render({"kip": {"enabled": False}})
    assert not m.has("DaemonSet") and m.has("Deployment")
    m = render({"global": {"rbac": False}})
    assert not any(m.has(k) for k in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))
    assert m.has("Deployment") and m.has("DaemonSet")
    assert not render({"ingress": {"enabled": False, "hostName": "x"}}).has("Ingress")
    assert not render({"imagePullSecretsCreate": {"enabled": False, "secrets": [{"name": "a", "data": "eA=="}]}}).has("Secret")


def test_psp_is_rendered_only_where_the_cluster_serves_it():
    # The SDK's offline rendering knows no PodSecurityPolicy API (Kubernetes 1.25+ behaviour), so
    # the request is accepted and nothing is rendered; test_helm_cli.py renders it with `helm
    # template --api-versions policy/v1beta1/PodSecurityPolicy`.
    m = render({"kip": {"podSecurityPolicy": {"create": True}}})
    assert not m.has("PodSecurityPolicy") and not m.has("ClusterRole", "kip-controller")


# ---- the deployment documentation's example files ------------------------------------------


def test_doc_values_ingress():
    m = render(fixture_values("values-ingress"))
    rule = m.get("Ingress")["spec"]["rules"][0]
    assert rule["host"] == "[unique-fully-qualified-domain-name]"
    assert rule["http"]["paths"][0]["pathType"] == "Prefix" and rule["http"]["paths"][0]["path"] == "/"
    assert m.has("Deployment") and m.has("DaemonSet")


@pytest.mark.parametrize("option, service_type, ingress", [(1, "ClusterIP", True), (2, "NodePort", False), (3, "NodePort", False)])
def test_doc_values_full(option, service_type, ingress):
    m = render(fixture_values(f"values-full-option{option}"))
    dep = m.get("Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    assert container(dep)["resources"] == {"limits": {"cpu": 2, "memory": "10Gi"}, "requests": {"cpu": 1, "memory": "2Gi"}}
    assert m.get("Service")["spec"]["type"] == service_type
    assert m.has("Ingress") == ingress
    assert not m.has("DaemonSet")
    if option != 3:
        assert container(dep)["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    if option == 3:
        assert container(dep)["image"] == "private.io/elyra/enterprise-gateway:dev"
        assert container(dep)["readinessProbe"]["tcpSocket"] == {"port": "http"}
        assert m.get("ServiceAccount", "enterprise-gateway-sa")["imagePullSecrets"] == [{"name": "private-registry-key"}]
        assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "private-registry-key"}]
        assert not m.has("Secret")


def test_doc_values_full_option3_with_created_secret():
    values = fixture_values("values-full-option3")
    values["imagePullSecretsCreate"]["enabled"] = True
    values["imagePullSecretsCreate"]["secrets"] = [{"name": "private-registry-key", "data": "UHJvZCBTZWNyZXQgSW5mb3JtYXRpb24K"}]
    secret = render(values).get("Secret", "private-registry-key")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["data"] == {".dockerconfigjson": "UHJvZCBTZWNyZXQgSW5mb3JtYXRpb24K"}


def test_doc_split_releases():
    rbac = render(fixture_values("values-rbac"))
    assert not (GATEWAY_KINDS | {"DaemonSet", "Ingress"}) & set(rbac.kinds())
    assert rbac.has("ServiceAccount", "enterprise-gateway-sa") and rbac.has("ServiceAccount", "kernel-image-puller-sa")
    assert rbac.has("ClusterRole", "kernel-controller") and rbac.has("ClusterRoleBinding", "enterprise-gateway-controller")

    kip = render(fixture_values("values-kip"))
    assert not GATEWAY_KINDS & set(kip.kinds()) and not kip.has("Ingress")
    ds = kip.get("DaemonSet")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "kernel-image-puller-sa"
    assert container(ds)["resources"] == {"limits": {"cpu": "100m", "memory": "200Mi"}, "requests": {"cpu": "50m", "memory": "100Mi"}}

    eg = render(fixture_values("values-eg"))
    assert set(eg.kinds()) == {"Deployment", "Service", "Ingress"}
    assert container(eg.get("Deployment"))["resources"]["requests"]["cpu"] == "500m"
    assert eg.get("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "enterprise-gateway-sa"


def test_global_service_account_name_takes_precedence():
    m = render({"global": {"serviceAccountName": "team-eg"}})
    assert m.get("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "team-eg"
    assert m.has("ServiceAccount", "team-eg") and not m.has("ServiceAccount", "enterprise-gateway-sa")
    binding = m.get("ClusterRoleBinding", "enterprise-gateway-controller")
    assert binding["subjects"][0]["name"] == "team-eg"


def test_large_numbers_render_as_integers():
    # Helm reads numbers as floats; 10000000 must not become "1e+07".
    m = render({"kernel": {"cullIdleTimeout": 10000000}, "kip": {"interval": 10000000},
                "deployment": {"extraEnv": {"EG_MAX_KERNELS": 10000000, "RATIO": 0.5}}})
    assert env_of(container(m.get("Deployment")))["EG_CULL_IDLE_TIMEOUT"] == "10000000"
    assert env_of(container(m.get("Deployment")))["EG_MAX_KERNELS"] == "10000000"
    assert env_of(container(m.get("Deployment")))["RATIO"] == "0.5"
    assert env_of(container(m.get("DaemonSet")))["KIP_INTERVAL"] == "10000000"
