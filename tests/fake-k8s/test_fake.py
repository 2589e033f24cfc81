"""Tests of the fake Kubernetes API server and its node simulator: the API answers like the
real kube-apiserver, kernel pods run and hand over their connection info, and the clients the
gateway is compared with (the python `kubernetes` client, upstream's launch_kubernetes.py and
launch_ipykernel.py) work against it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import textwrap
import time
import uuid

import pytest

import apiserver
import validation
from conftest import EG_SRC, EG_VENV, SYSTEM_PYTHON, TOKEN, Fake, require

KERNEL_IMAGE = "docker.io/elyra/kernel-py:3.3.0"


def pod_body(name, image="busybox:1.36", labels=None, env=None, **spec):
    container = {"name": "main", "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def kernel_env(listener, kernel_id, **extra):
    env = {
        "KERNEL_ID": kernel_id,
        "RESPONSE_ADDRESS": listener.address,
        "PUBLIC_KEY": listener.public_key,
        "PORT_RANGE": "0..0",
        "KERNEL_LANGUAGE": "python",
    }
    env.update(extra)
    return env


def running(pod):
    return pod["status"].get("phase") == "Running"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def kernel_client(info: dict, ip: str, timeout: float = 60):
    """A jupyter_client connected to the kernel at the pod IP, once it answers kernel_info (the
    kernel may still be starting: the launcher sends the connection info first)."""
    require(
        __import__("importlib").util.find_spec("jupyter_client") is not None,
        "python3-ipykernel (jupyter_client)",
    )
    from queue import Empty

    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient()
    ports = (
        "shell_port",
        "iopub_port",
        "stdin_port",
        "hb_port",
        "control_port",
        "transport",
        "signature_scheme",
    )
    client.load_connection_info({**{k: info[k] for k in ports}, "ip": ip, "key": info["key"].encode()})
    client.start_channels()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id = client.kernel_info()
        try:
            while True:
                reply = client.get_shell_msg(timeout=1)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        except Empty:
            continue
        while True:  # drain IOPub (the status messages of the kernel_info requests)
            try:
                client.get_iopub_msg(timeout=0.2)
            except Empty:
                break
        return client
    client.stop_channels()
    raise AssertionError(f"the kernel at {ip} never answered kernel_info")


# --- pure logic: tables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ("", {"a": "1"}, True),
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "1"}, True),
        ("a=1", {"a": "2"}, False),
        ("a!=1", {"a": "2"}, True),
        ("a!=1", {}, True),
        ("a!=1", {"a": "1"}, False),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a in (1,2)", {"a": "3"}, False),
        ("a in (1,2)", {}, False),
        ("a notin (1,2)", {"a": "3"}, True),
        ("a notin (1,2)", {}, True),
        ("a notin (1,2)", {"a": "1"}, False),
        ("a", {"a": ""}, True),
        ("a", {"b": "1"}, False),
        ("!a", {"b": "1"}, True),
        ("!a", {"a": "1"}, False),
        ("kernel_id=k1,component=kernel", {"kernel_id": "k1", "component": "kernel"}, True),
        ("kernel_id=k1,component=kernel", {"kernel_id": "k1"}, False),
        ("app.kubernetes.io/name=eg,!x", {"app.kubernetes.io/name": "eg"}, True),
        ("a=", {"a": ""}, True),
    ],
)
def test_label_selector(selector, labels, expected):
    assert apiserver.labels_match(apiserver.parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize("selector", ["a in 1", "a=1 b", "a in (1", "=1", "a/b/c=1"])
def test_label_selector_rejects(selector):
    with pytest.raises(ValueError):
        apiserver.parse_label_selector(selector)


@pytest.mark.parametrize(
    "image, normalised",
    [
        ("python", "docker.io/library/python:latest"),
        ("python:3", "docker.io/library/python:3"),
        ("elyra/kernel-py:3.3.0", "docker.io/elyra/kernel-py:3.3.0"),
        ("localhost:5000/x/y", "localhost:5000/x/y:latest"),
        ("Registry.Example.com/a/b:v1", "Registry.Example.com/a/b:v1"),
        ("ghcr.io/a/b@sha256:" + "a" * 64, "ghcr.io/a/b@sha256:" + "a" * 64),
        ("Elyra/kernel-py", "Elyra/kernel-py:latest"),  # an upper-case first component is a host
        ("elyra/Kernel-Py", None),
        ("elyra/kernel-py:", None),
        ("elyra//kernel-py", None),
        ("a b", None),
        ("", None),
    ],
)
def test_image_reference(image, normalised):
    ref = validation.parse_image(image)
    assert (str(ref) if ref else None) == normalised


@pytest.mark.parametrize(
    "quantity, value",
    [
        ("500m", "0.5"),
        ("2", "2"),
        ("1Gi", str(2**30)),
        ("1.5", "1.5"),
        ("1e3", "1000"),
        (2, "2"),
        ("abc", None),
        ("1Q", None),
    ],
)
def test_quantity(quantity, value):
    q = validation.parse_quantity(quantity)
    assert (None if q is None else q.normalize()) == (
        None if value is None else validation.Decimal(value).normalize()
    )


# --- API semantics ----------------------------------------------------------------------------


def test_discovery_and_version(fake):
    assert fake.ok("GET", "/api")["versions"] == ["v1"]
    core = {r["name"]: r for r in fake.ok("GET", "/api/v1")["resources"]}
    assert {
        "pods",
        "pods/status",
        "pods/log",
        "namespaces",
        "services",
        "configmaps",
        "secrets",
        "events",
    } <= set(core)
    assert core["persistentvolumes"]["namespaced"] is False and core["pods"]["namespaced"] is True
    groups = fake.ok("GET", "/apis")["groups"]
    assert [g["name"] for g in groups] == ["rbac.authorization.k8s.io"]
    rbac = fake.ok("GET", "/apis/rbac.authorization.k8s.io/v1")
    assert rbac["resources"][0]["kind"] == "RoleBinding"
    assert fake.ok("GET", "/version")["major"] == "1"


def test_unauthorized(fake):
    for token in (None, "wrong"):
        status, body = fake.request("GET", "/api/v1/namespaces", token=token)
        assert status == 401
        assert body == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
        }  # fmt: skip


def test_keep_alive_after_a_refused_body(fake):
    """A request refused before its body is read leaves the connection usable (clients such as
    kube-rs keep connections open)."""
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=10)
    body = json.dumps({"metadata": {"name": "refused"}})
    conn.request("POST", "/api/v1/namespaces", body=body, headers={"Authorization": "Bearer wrong"})
    resp = conn.getresponse()
    assert resp.status == 401
    resp.read()
    conn.request("GET", "/api/v1/namespaces/default", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["metadata"]["name"] == "default"
    conn.close()


def test_status_bodies(fake):
    ns = fake.namespace("status-bodies")
    status, body = fake.request("GET", f"/api/v1/namespaces/{ns}/pods/nope")
    assert (status, body) == (
        404,
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": 'pods "nope" not found',
         "reason": "NotFound", "details": {"name": "nope", "kind": "pods"}, "code": 404},
    )  # fmt: skip
    status, body = fake.request("POST", "/api/v1/namespaces/absent/pods", pod_body("p"))
    assert status == 404 and body["message"] == 'namespaces "absent" not found'
    assert body["details"] == {"name": "absent", "kind": "namespaces"}

    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("p"))
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("p"))
    assert (
        status == 409 and body["reason"] == "AlreadyExists" and body["message"] == 'pods "p" already exists'
    )
    assert body["details"] == {"name": "p", "kind": "pods"}

    status, body = fake.request("POST", "/api/v1/namespaces", {"metadata": {"name": "default"}})
    assert status == 409 and body["message"] == 'namespaces "default" already exists'

    status, body = fake.request("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/x")
    assert status == 404 and body["message"] == 'rolebindings.rbac.authorization.k8s.io "x" not found'
    assert body["details"] == {"name": "x", "group": "rbac.authorization.k8s.io", "kind": "rolebindings"}


def test_namespace_name_longer_than_63(fake):
    name = "alice-smith-at-corporation-example-" + str(uuid.uuid4())
    assert len(name) > 63
    status, body = fake.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 422, body
    assert body["reason"] == "Invalid"
    # The name is also the value of the label kubernetes.io/metadata.name, so both are invalid.
    too_long = f'Invalid value: "{name}": must be no more than 63 characters'
    assert (
        body["message"]
        == f'Namespace "{name}" is invalid: [metadata.name: {too_long}, metadata.labels: {too_long}]'
    )
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": too_long, "field": "metadata.name"},
        {"reason": "FieldValueInvalid", "message": too_long, "field": "metadata.labels"},
    ]
    status, body = fake.request("POST", "/api/v1/namespaces", {"metadata": {"name": "Upper_Case"}})
    assert status == 422 and "a lowercase RFC 1123 label must consist of" in body["message"]


def test_strict_schema_rejects(fake):
    ns = fake.namespace("schema")
    unknown = pod_body("unknown-field")
    unknown["spec"]["foo"] = 1
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", unknown)
    assert status == 422, body
    assert body["message"] == 'Pod "unknown-field" is invalid: spec.foo: Forbidden: unknown field "spec.foo"'
    assert body["details"]["causes"][0]["field"] == "spec.foo"

    wrong_type = pod_body("wrong-type")
    wrong_type["spec"]["containers"][0]["ports"] = [{"containerPort": "eighty"}]
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", wrong_type)
    assert status == 422 and "spec.containers[0].ports[0].containerPort" in body["message"], body

    no_containers = pod_body("no-containers")
    del no_containers["spec"]["containers"]
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", no_containers)
    assert status == 422 and "spec.containers: Required value" in body["message"], body

    long_container = pod_body("long-container")
    long_container["spec"]["containers"][0]["name"] = "c" * 64
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", long_container)
    assert status == 422 and "spec.containers[0].name: Invalid value" in body["message"], body

    over_limit = pod_body("over-limit")
    over_limit["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", over_limit)
    assert status == 422 and "must be less than or equal to cpu limit of 1" in body["message"], body

    bad_label = pod_body("bad-label", labels={"kernel_id": "x" * 64})
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", bad_label)
    assert status == 422 and "metadata.labels: Invalid value" in body["message"], body

    rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
          "roleRef": {"kind": "ClusterRole", "name": "kernel-controller"}, "subjects": [{"kind": "Nobody", "name": "x"}]}  # fmt: skip
    status, body = fake.request(
        "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", rb
    )
    assert status == 422 and body["message"].startswith(
        'RoleBinding.rbac.authorization.k8s.io "rb" is invalid: '
    )
    assert fake.ok("GET", f"/api/v1/namespaces/{ns}/pods")["items"] == []


def test_create_defaults(fake):
    ns = fake.namespace("defaults")
    rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "kernel-controller"},
          "roleRef": {"kind": "ClusterRole", "name": "kernel-controller", "apiGroup": ""},
          "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns, "apiGroup": ""}]}  # fmt: skip
    created = fake.ok("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", rb)
    assert created["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert created["subjects"][0]["apiGroup"] == "" or "apiGroup" not in created["subjects"][0]

    gen = pod_body("")
    gen["metadata"] = {"generateName": "kernel-"}
    pod = fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", gen)
    name, meta = pod["metadata"]["name"], pod["metadata"]
    assert name.startswith("kernel-") and len(name) == len("kernel-") + 5
    uuid.UUID(meta["uid"])
    assert meta["namespace"] == ns and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert pod["spec"]["serviceAccountName"] == "default" and pod["status"]["phase"] == "Pending"

    missing_sa = pod_body("missing-sa", serviceAccountName="nobody")
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/pods", missing_sa)
    assert status == 403 and body["message"] == (
        f'pods "missing-sa" is forbidden: error looking up service account {ns}/nobody: serviceaccount "nobody" not found'
    )
    nso = fake.ok("GET", f"/api/v1/namespaces/{ns}")
    assert (
        nso["status"]["phase"] == "Active" and nso["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns
    )


def test_list_selectors_and_pages(fake):
    ns = fake.namespace("lists")
    for i in range(5):
        fake.ok("POST", f"/api/v1/namespaces/{ns}/configmaps",
                {"metadata": {"name": f"cm{i}", "labels": {"i": str(i), "odd": str(i % 2)}}, "data": {}})  # fmt: skip
    names = lambda q: [
        o["metadata"]["name"] for o in fake.ok("GET", f"/api/v1/namespaces/{ns}/configmaps?{q}")["items"]
    ]  # noqa: E731
    assert names("labelSelector=odd%3D1") == ["cm1", "cm3"]
    assert names("labelSelector=i+in+(0,4),odd!=1") == ["cm0", "cm4"]
    assert names("labelSelector=i+notin+(0,1,2)") == ["cm3", "cm4", "kube-root-ca.crt"]  # no label i
    assert names("labelSelector=i") == [f"cm{i}" for i in range(5)]
    assert names("fieldSelector=metadata.name%3Dcm2") == ["cm2"]
    status, body = fake.request("GET", f"/api/v1/namespaces/{ns}/configmaps?labelSelector=i+in+3")
    assert status == 400 and body["reason"] == "BadRequest"
    page = fake.ok("GET", f"/api/v1/namespaces/{ns}/configmaps?limit=4")
    assert len(page["items"]) == 4 and page["metadata"]["remainingItemCount"] == 2  # with kube-root-ca.crt
    rest = fake.ok(
        "GET", f"/api/v1/namespaces/{ns}/configmaps?limit=4&continue={page['metadata']['continue']}"
    )
    assert [o["metadata"]["name"] for o in rest["items"]] == ["cm4", "kube-root-ca.crt"]
    assert "kind" not in page["items"][0]  # as the real server: list items carry no kind


def test_namespace_cascade_delete(fake):
    ns = fake.namespace("cascade")
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("sleeper"))
    fake.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "cm"}})
    fake.ok("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            {"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": ""}})  # fmt: skip
    fake.wait_pod(ns, "sleeper", running)
    pid = fake.ok("GET", "/fake/stats")["pods"][f"{ns}/sleeper"]["pid"]
    assert pid_alive(pid)

    fake.ok("POST", "/fake/faults", {"namespace_finalize_delay": 0.5})
    deleted = fake.ok(
        "DELETE", f"/api/v1/namespaces/{ns}", {"propagationPolicy": "Background", "gracePeriodSeconds": 0}
    )
    assert deleted["status"]["phase"] == "Terminating" and deleted["metadata"]["deletionTimestamp"]
    status, body = fake.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "late"}})
    assert status == 403 and body["reason"] == "Forbidden"
    assert (
        body["message"]
        == f'configmaps "late" is forbidden: unable to create new content in namespace {ns} because it is being terminated'
    )
    status, body = fake.request("DELETE", f"/api/v1/namespaces/{ns}")
    assert (
        status == 409
        and "The system is ensuring all content is removed from this namespace" in body["message"]
    )

    deadline = time.monotonic() + 15
    while fake.request("GET", f"/api/v1/namespaces/{ns}")[0] != 404:
        assert time.monotonic() < deadline, "namespace never went away"
        time.sleep(0.05)
    for path in ("pods/sleeper", "configmaps/cm", "serviceaccounts/default"):
        assert fake.request("GET", f"/api/v1/namespaces/{ns}/{path}")[0] == 404
    assert (
        fake.request("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/rb")[0] == 404
    )
    assert not pid_alive(pid)


def test_watch_resource_version_and_selector(fake):
    ns = fake.namespace("watching")
    rv = fake.ok("GET", f"/api/v1/namespaces/{ns}/pods")["metadata"]["resourceVersion"]
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("other", labels={"component": "other"}))
    fake.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        pod_body("mine", labels={"kernel_id": "k1", "component": "kernel"}),
    )
    fake.wait_pod(ns, "mine", running)
    fake.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/mine?gracePeriodSeconds=0")

    seen, last_rv = [], int(rv)
    path = f"/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion={rv}&labelSelector=kernel_id%3Dk1&timeoutSeconds=3"
    for ev in fake.watch(path):
        obj = ev["object"]
        assert obj["metadata"]["name"] == "mine", ev
        assert int(obj["metadata"]["resourceVersion"]) > last_rv
        last_rv = int(obj["metadata"]["resourceVersion"])
        seen.append((ev["type"], obj["status"].get("phase")))
        if ev["type"] == "DELETED":
            break
    types = [t for t, _ in seen]
    assert types[0] == "ADDED" and types[-1] == "DELETED" and set(types[1:-1]) == {"MODIFIED"}, seen
    assert ("MODIFIED", "Running") in seen

    # From "now" (no resourceVersion): the current objects as ADDED, then bookmarks.
    events = []
    for ev in fake.watch(
        f"/api/v1/namespaces/{ns}/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=2"
    ):
        events.append(ev)
    assert [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"] == ["other"]
    assert any(e["type"] == "BOOKMARK" for e in events)


def test_watch_too_old_resource_version(tmp_path):
    fake = Fake(tmp_path, ["--watch-history", "20"])
    try:
        ns = fake.namespace("expiring")
        for i in range(25):
            fake.ok("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": f"cm{i}"}})
        events = list(fake.watch(f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion=3"))
        assert len(events) == 1 and events[0]["type"] == "ERROR", events
        status = events[0]["object"]
        assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
        assert status["message"].startswith("too old resource version: 3 (")
    finally:
        fake.stop()


def test_stats_and_faults(fake):
    ns = fake.namespace("faults")
    fake.request("DELETE", "/fake/stats")
    fake.ok(
        "POST",
        "/fake/faults",
        {"rules": [{"verb": "create", "resource": "rolebindings", "code": 500, "times": 1}]},
    )
    rb = {"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": ""}}
    status, body = fake.request(
        "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", rb
    )
    assert status == 500 and body["kind"] == "Status" and body["reason"] == "InternalError"
    fake.ok("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", rb)  # times: 1

    fake.ok("POST", "/fake/faults", {"rules": [{"verb": "list", "resource": "pods", "delay": 0.3}]})
    t = time.monotonic()
    fake.ok("GET", f"/api/v1/namespaces/{ns}/pods")
    assert time.monotonic() - t >= 0.3
    stats = fake.ok("GET", "/fake/stats")
    assert stats["requests"]["create"] == {"rolebindings": 2}
    assert stats["requests"]["list"] == {"pods": 1}
    status, _ = fake.request("POST", "/fake/faults", {"rules": [{"verb": "create"}]})
    assert status == 400


# --- the node simulator -----------------------------------------------------------------------


def test_unknown_image_err_image_pull(fake):
    ns = fake.namespace("images")
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("missing", image="docker.io/x/y:z"))
    t = time.monotonic()

    def waiting(reason):
        def pred(pod):
            cs = pod["status"].get("containerStatuses") or [{}]
            return cs[0].get("state", {}).get("waiting", {}).get("reason") == reason

        return pred

    pod = fake.wait_pod(ns, "missing", waiting("ErrImagePull"), timeout=2)
    assert time.monotonic() - t < 2
    msg = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert 'failed to pull and unpack image "docker.io/x/y:z"' in msg
    assert pod["status"]["phase"] == "Pending" and pod["spec"]["nodeName"] == "fake-node"
    pod = fake.wait_pod(ns, "missing", waiting("ImagePullBackOff"), timeout=5)
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"].startswith(
        'Back-off pulling image "docker.io/x/y:z"'
    )
    events = fake.ok("GET", f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3Dmissing")[
        "items"
    ]
    assert {"Scheduled", "Failed", "BackOff"} <= {e["reason"] for e in events}

    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("invalid", image="elyra/Kernel-Py"))
    fake.wait_pod(ns, "invalid", waiting("InvalidImageName"), timeout=2)


def test_gpu_request_unschedulable(fake):
    ns = fake.namespace("gpu")
    body = pod_body("gpu")
    body["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", body)

    def unschedulable(pod):
        return any(
            c["type"] == "PodScheduled" and c["status"] == "False"
            for c in pod["status"].get("conditions") or []
        )

    pod = fake.wait_pod(ns, "gpu", unschedulable, timeout=5)
    cond = pod["status"]["conditions"][0]
    assert cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]


def test_kernel_pod_handshake_and_interrupt(fake, listener):
    require(os.path.exists(SYSTEM_PYTHON), SYSTEM_PYTHON)
    ns = fake.namespace("kernels")
    kernel_id = str(uuid.uuid4())
    env = kernel_env(listener, kernel_id, PORT_RANGE="40000..49999", EG_MIN_PORT_RANGE_SIZE="100")
    fake.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        pod_body("kernel", KERNEL_IMAGE, {"kernel_id": kernel_id}, env),
    )
    pod = fake.wait_pod(ns, "kernel", running)
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.0.") and ip != "127.0.0.1" and pod["status"]["hostIP"] == "127.0.0.1"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]

    info = listener.decrypt(listener.wait_payload())
    assert info["kernel_id"] == kernel_id and info["ip"] == "0.0.0.0"
    ports = [
        info[k] for k in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port", "comm_port")
    ]
    assert len(set(ports)) == 6 and all(40000 <= p <= 49999 for p in ports), info
    uuid.UUID(info["key"])
    assert info["transport"] == "tcp" and info["signature_scheme"] == "hmac-sha256"

    client = kernel_client(info, ip)
    try:
        msg_id = client.execute("import time; time.sleep(60)")
        time.sleep(1)
        with socket.create_connection((ip, info["comm_port"]), timeout=5) as s:
            s.sendall(json.dumps({"signum": 2}).encode())
        reply = client.get_shell_msg(timeout=15)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()

    with socket.create_connection((ip, info["comm_port"]), timeout=5) as s:
        s.sendall(b'{"shutdown": 1}')
        s.shutdown(socket.SHUT_WR)
    pid = fake.ok("GET", "/fake/stats")["pods"][f"{ns}/kernel"]["pid"]
    kernel_pids = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert len(kernel_pids) >= 2, "the launcher and its kernel run in the pod's process group"

    rv = fake.ok("GET", f"/api/v1/namespaces/{ns}/pods")["metadata"]["resourceVersion"]
    fake.ok(
        "DELETE",
        f"/api/v1/namespaces/{ns}/pods/kernel",
        {"gracePeriodSeconds": 0, "propagationPolicy": "Background"},
    )
    types = [
        e["type"]
        for e in fake.watch(f"/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1")
    ]
    assert "DELETED" in types
    deadline = time.monotonic() + 5
    while any(pid_alive(int(p)) for p in kernel_pids):
        assert time.monotonic() < deadline, "processes outlived their pod"
        time.sleep(0.05)
    assert fake.request("GET", f"/api/v1/namespaces/{ns}/pods/kernel")[0] == 404


def test_graceful_pod_delete(fake, listener):
    ns = fake.namespace("graceful")
    env = kernel_env(listener, str(uuid.uuid4()))
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("k", KERNEL_IMAGE, env=env))
    fake.wait_pod(ns, "k", running)
    listener.wait_payload()
    pid = fake.ok("GET", "/fake/stats")["pods"][f"{ns}/k"]["pid"]
    pod = fake.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/k")  # the pod's own 30 s grace
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    deadline = time.monotonic() + 10
    while fake.request("GET", f"/api/v1/namespaces/{ns}/pods/k")[0] != 404:
        assert time.monotonic() < deadline, "a pod whose processes ended on SIGTERM stayed"
        time.sleep(0.05)
    assert not pid_alive(pid)


def test_launcher_exit_fails_pod(fake, listener):
    ns = fake.namespace("exits")
    env = kernel_env(listener, str(uuid.uuid4()), FAKE_LAUNCHER_EXIT="1")
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("k", KERNEL_IMAGE, env=env))
    pod = fake.wait_pod(ns, "k", lambda p: p["status"].get("phase") == "Failed")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 1 and term["reason"] == "Error"
    assert "FAKE_LAUNCHER_EXIT" in fake.ok("GET", f"/api/v1/namespaces/{ns}/pods/k/log")

    missing = kernel_env(listener, str(uuid.uuid4()))
    del missing["PUBLIC_KEY"]
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("no-key", KERNEL_IMAGE, env=missing))
    fake.wait_pod(ns, "no-key", lambda p: p["status"].get("phase") == "Failed")


def test_launcher_stalls_response(fake, listener):
    ns = fake.namespace("stalls")
    env = kernel_env(listener, str(uuid.uuid4()), FAKE_LAUNCHER_STALL_RESPONSE="1")
    fake.ok("POST", f"/api/v1/namespaces/{ns}/pods", pod_body("k", KERNEL_IMAGE, env=env))
    fake.wait_pod(ns, "k", running)
    with listener.cond:
        assert listener.cond.wait_for(lambda: listener.connections == 1, 15)
    time.sleep(1)
    assert listener.payloads == []
    fake.ok("DELETE", f"/api/v1/namespaces/{ns}/pods/k?gracePeriodSeconds=0")
    assert listener.wait_payload(5) == b""  # the connection closes with the pod, empty


# --- upstream's clients and launchers against the fake ------------------------------------------


def eg_python() -> str:
    python = EG_VENV / "bin" / "python"
    require(python.exists(), f"upstream Enterprise Gateway's venv {EG_VENV}")
    return str(python)


def test_python_kubernetes_client(fake):
    ns = fake.namespace("python-client")
    script = textwrap.dedent(f"""
        import json, sys
        from kubernetes import client, config, watch
        config.load_kube_config(config_file={str(fake.kubeconfig)!r})
        v1 = client.CoreV1Api()
        pod = client.V1Pod(metadata=client.V1ObjectMeta(name="via-client", labels={{"kernel_id": "k9"}}),
                           spec=client.V1PodSpec(restart_policy="Never",
                                                 containers=[client.V1Container(name="c", image="busybox:1.36")]))
        created = v1.create_namespaced_pod(namespace={ns!r}, body=pod)
        listed = v1.list_namespaced_pod(namespace={ns!r}, label_selector="kernel_id=k9")
        try:
            v1.create_namespaced_pod(namespace={ns!r}, body=pod)
            conflict = None
        except client.exceptions.ApiException as e:
            conflict = [e.status, e.reason, json.loads(e.body)["reason"]]
        phases = []
        for ev in watch.Watch().stream(v1.list_namespaced_pod, namespace={ns!r}, timeout_seconds=10):
            phases.append(ev["object"].status.phase)
            if ev["object"].status.phase == "Running":
                break
        rb = client.V1RoleBinding(metadata=client.V1ObjectMeta(name="kernel-controller"),
                                  role_ref=client.V1RoleRef(api_group="", kind="ClusterRole", name="kernel-controller"),
                                  subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default", namespace={ns!r}, api_group="")])
        rb = client.RbacAuthorizationV1Api().create_namespaced_role_binding(namespace={ns!r}, body=rb)
        deleted = v1.delete_namespaced_pod("via-client", {ns!r}, grace_period_seconds=0, propagation_policy="Background")
        status = v1.delete_namespace(  # a dict with this client version
            {ns!r}, grace_period_seconds=0, propagation_policy="Background")
        print(json.dumps({{"uid": created.metadata.uid, "listed": [p.metadata.name for p in listed.items],
                          "conflict": conflict, "phases": phases, "role_ref_group": rb.role_ref.api_group,
                          "deleted": deleted.metadata.name, "ns_phase": status["status"]["phase"]}}))
        """)
    out = subprocess.run([eg_python(), "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["listed"] == ["via-client"]
    assert result["conflict"] == [409, "Conflict", "AlreadyExists"]
    assert result["phases"][-1] == "Running"
    assert result["role_ref_group"] == "rbac.authorization.k8s.io"
    assert result["deleted"] == "via-client" and result["ns_phase"] == "Terminating"


def run_launch_kubernetes(fake, listener, ns, kernel_id, image, **extra_env):
    script = EG_SRC / "etc" / "kernel-launchers" / "kubernetes" / "scripts" / "launch_kubernetes.py"
    require(script.exists(), f"upstream's launch_kubernetes.py in {EG_SRC}")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "KERNEL_ID": kernel_id,
        "KERNEL_NAMESPACE": ns,
        "KERNEL_POD_NAME": f"alice-{kernel_id}",
        "KERNEL_IMAGE": image,
        "KERNEL_USERNAME": "alice",
        "KERNEL_UID": "1000",
        "KERNEL_GID": "100",
        "KERNEL_LANGUAGE": "python",
        "KERNEL_SERVICE_ACCOUNT_NAME": "default",
        "KERNEL_GATEWAY": "1",
        "EG_MIN_PORT_RANGE_SIZE": "1000",
        "EG_MAX_PORT_RANGE_RETRIES": "5",
        "KUBECONFIG": str(fake.kubeconfig),
        **extra_env,
    }
    args = ["--kernel-id", kernel_id, "--port-range", "0..0", "--response-address", listener.address,
            "--public-key", listener.public_key, "--spark-context-initialization-mode", "none"]  # fmt: skip
    return subprocess.run(
        [eg_python(), str(script), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("image", [KERNEL_IMAGE, "docker.io/elyra/kernel-py-upstream:3.3.0"])
def test_upstream_launch_kubernetes(fake, listener, image):
    """Upstream's launch_kubernetes.py renders its stock pod template and creates the pod: the
    fake accepts what upstream creates. The pod then runs the fake's in-pod launcher, or
    upstream's own launch_ipykernel.py, and either hands over a connection info that decrypts
    and leads to a live kernel."""
    ns = fake.namespace(f"upstream-{'u' if 'upstream' in image else 'f'}")
    kernel_id = str(uuid.uuid4())
    out = run_launch_kubernetes(
        fake, listener, ns, kernel_id, image, KERNEL_CPUS="100m", KERNEL_MEMORY="128Mi"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    pods = fake.ok(
        "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=kernel_id%3D{kernel_id},component%3Dkernel"
    )["items"]
    assert [p["metadata"]["name"] for p in pods] == [f"alice-{kernel_id}"]
    pod = pods[0]
    assert pod["spec"]["securityContext"] == {"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100}
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert (
        env["KERNEL_ID"] == kernel_id
        and env["RESPONSE_ADDRESS"] == listener.address
        and env["PORT_RANGE"] == "0..0"
    )

    pod = fake.wait_pod(ns, pod["metadata"]["name"], running)
    info = listener.decrypt(listener.wait_payload(60))
    assert info["kernel_id"] == kernel_id

    client = kernel_client(info, pod["status"]["podIP"])
    try:
        client.execute("print(6 * 7)")
        deadline = time.monotonic() + 30
        while True:
            msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["msg_type"] == "stream":
                assert msg["content"]["text"].strip() == "42"
                break
    finally:
        client.stop_channels()
    fake.ok("DELETE", f"/api/v1/namespaces/{ns}?gracePeriodSeconds=0")

    # A second launch of the same pod: 409 AlreadyExists makes upstream's launcher fail.
    out = run_launch_kubernetes(fake, listener, "default", kernel_id, image)
    assert out.returncode == 0, out.stderr
    out = run_launch_kubernetes(fake, listener, "default", kernel_id, image)
    assert out.returncode != 0 and "AlreadyExists" in out.stderr
    fake.ok("DELETE", f"/api/v1/namespaces/default/pods/alice-{kernel_id}?gracePeriodSeconds=0")
