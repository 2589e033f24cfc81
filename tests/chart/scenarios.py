"""Values the chart is rendered with for schema validation: the defaults, every example file of
the deployment documentation, and combinations that turn on every optional part."""

from __future__ import annotations

import base64
import json

from conftest import FIXTURES, fixture_values

DOCKERCONFIG = base64.b64encode(
    json.dumps({"auths": {"private.io": {"auth": base64.b64encode(b"u:p").decode()}}}).encode()
).decode()

EVERYTHING = {
    "global": {
        "commonLabels": {"team": "data", "cost-center": "42"},
        "imagePullSecrets": ["private-registry-key"],
    },
    "imagePullSecretsCreate": {
        "enabled": True,
        "annotations": {"helm.sh/resource-policy": "keep"},
        "secrets": [
            {"name": "private-registry-key", "data": DOCKERCONFIG},
            {"name": "second-registry-key", "data": DOCKERCONFIG},
        ],
    },
    "authToken": "0123456789",
    "service": {
        "type": "NodePort",
        "externalIPs": {"k8sMasterPublicIP": "192.0.2.10"},
        "ports": [
            {"name": "http", "port": 8888, "targetPort": 8888, "nodePort": 32652},
            {"name": "http-response", "port": 8877, "targetPort": 8877, "nodePort": 30481},
        ],
    },
    "deployment": {
        "replicas": 2,
        "terminationGracePeriodSeconds": 60,
        "resources": {"limits": {"cpu": 2, "memory": "10Gi"}, "requests": {"cpu": 1, "memory": "2Gi"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "eg", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["eg"]}]}
                    ]
                }
            }
        },
        "extraEnv": {"EG_INHERITED_ENVS": "PATH", "EG_MAX_KERNELS": 20, "EG_LIST_KERNELS": True},
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/eg"},
    },
    "kernelspecs": {"image": "registry.example/kernelspecs:1"},
    "ingress": {
        "enabled": True,
        "ingressClassName": "nginx",
        "hostName": "eg.example.com",
        "path": "/gateway",
        "pathType": "ImplementationSpecific",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
        "tls": [{"secretName": "eg-tls", "hosts": ["eg.example.com"]}],
    },
    "kernel": {"clusterRole": "my-kernel-role", "shareGatewayNamespace": True},
    "kip": {
        "fetcher": "CombinedImagesFetcher",
        "internalFetcher": ["KernelSpecsFetcher", "ConfigMapImagesFetcher", "StaticListFetcher"],
        "images": ["python:3.12", "quay.io/org/kernel:1"],
        "configMap": {"namespace": "images", "name": "kernel-images", "key": "image-names"},
        "criSocket": "/run/containerd/containerd.sock",
        "pullSecrets": ["kernel.registry.key"],
        "priorityClassName": "system-node-critical",
        "livenessProbe": {"enabled": True},
        "logFormat": "json",
        "maxDiskUsagePercent": 80,
        "registryCA": {"configMap": "corp-ca"},
        "extraEnv": {"KIP_WATCH_SECONDS": 30},
        "tolerations": [{"operator": "Exists"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}
                    ]
                }
            }
        },
        "annotations": {"iam.gke.io/gcp-service-account": "kip@p.iam.gserviceaccount.com"},
    },
}

SCENARIOS: dict[str, dict] = {"defaults": {}}
SCENARIOS.update({p.stem: fixture_values(p.stem) for p in sorted(FIXTURES.glob("values-*.yaml"))})
SCENARIOS.update(
    {
        "everything": EVERYTHING,
        "nfs": {"nfs": {"enabled": True, "internalServerIPAddress": "10.0.0.5"}},
        "pvc": {"kernelspecsPvc": {"enabled": True, "name": "kernelspecs"}},
        "load-balancer": {"service": {"type": "LoadBalancer"}},
        "static-list": {"kip": {"fetcher": "StaticListFetcher", "images": "a:1, b:2"}},
        "configmap": {"kip": {"fetcher": "ConfigMapImagesFetcher"}},
        "no-rbac": {"global": {"rbac": False}},
        "upstream-image": {"image": "elyra/enterprise-gateway:3.2.3", "kernelspecs": {"image": "reg/ks:1"}},
        "upstream-image-no-probes": {
            "image": "elyra/enterprise-gateway:3.2.3",
            "deployment": {"readinessProbe": {"enabled": False}, "livenessProbe": {"enabled": False}},
        },
        "gateway-tuned": {
            "authToken": "abc",
            "nfs": {"enabled": True, "internalServerIPAddress": "10.0.0.5"},
            "deployment": {
                "adminPort": 9100,
                "prometheusScrape": False,
                "readinessProbe": {"periodSeconds": 3, "timeoutSeconds": 2, "successThreshold": 1},
                "livenessProbe": {"enabled": False},
                "shutdownGrace": 50,
                "terminationGracePeriodSeconds": 60,
            },
        },
    }
)
