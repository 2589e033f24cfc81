#!/usr/bin/env python3
"""A FAKE Kubernetes API server with a node simulator, for tests only.

This is not Kubernetes. It serves the small part of the Kubernetes API that the gateway's
Kubernetes launcher (kube-rs) and upstream Enterprise Gateway's `launch_kubernetes.py` (the
python `kubernetes` client) use, over plain HTTP on 127.0.0.1 with one bearer token, and
answers like the real kube-apiserver does: the same paths, verbs, `Status` bodies and messages,
resourceVersions, watches (with bookmarks and 410 Expired), strict schema validation of every
created object against the Kubernetes JSON schemas bundled with kubernetes-validate, and
namespace lifecycle (NotFound, Terminating, cascading delete).

Its one node, `fake-node`, runs pods as local processes (see node.py): kernel images run an
in-pod kernel launcher, each pod on its own loopback address 127.0.0.N.

Run it with the python of /opt/kip-test/venv (it has kubernetes-validate and jsonschema):

    /opt/kip-test/venv/bin/python tests/fake-k8s/apiserver.py --port 0 --token T \
        --state-dir DIR [--images FILE|LIST] [--kubeconfig-out PATH] [--ready-file PATH]

The first line on stdout is the server's URL. Test hooks (same token): GET /fake/stats counts
API requests by verb and resource; POST /fake/faults injects errors and delays.
See README.md in this directory.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import datetime
import json
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import node as node_sim  # noqa: E402
import validation  # noqa: E402

RBAC_GROUP = "rbac.authorization.k8s.io"


class Resource:
    def __init__(self, group, version, name, kind, namespaced, short=(), deleted_object=False, singular=None):
        self.group, self.version, self.name, self.kind = group, version, name, kind
        self.namespaced = namespaced
        self.short = list(short)
        # The real registry returns the deleted object (not a Status) for these resources.
        self.deleted_object = deleted_object
        self.singular = singular or kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def qualified(self) -> str:
        """`pods`, `rolebindings.rbac.authorization.k8s.io`: the resource as errors name it."""
        return f"{self.name}.{self.group}" if self.group else self.name

    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


RESOURCES = [
    Resource("", "v1", "namespaces", "Namespace", False, ["ns"], deleted_object=True),
    Resource("", "v1", "pods", "Pod", True, ["po"], deleted_object=True),
    Resource("", "v1", "services", "Service", True, ["svc"], deleted_object=True),
    Resource("", "v1", "configmaps", "ConfigMap", True, ["cm"]),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"]),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"], deleted_object=True),
    Resource("", "v1", "persistentvolumes", "PersistentVolume", False, ["pv"], deleted_object=True),
    Resource("", "v1", "events", "Event", True, ["ev"]),
    Resource(RBAC_GROUP, "v1", "rolebindings", "RoleBinding", True),
]
BY_PATH = {(r.group, r.version, r.name): r for r in RESOURCES}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCES = {"pods": ["status", "log"], "namespaces": ["status"]}


def now_rfc3339(offset: float = 0) -> str:
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def strip_nulls(value):
    """Go's JSON decoding into typed structs forgets nulls; so does the store."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


# --- errors -------------------------------------------------------------------------------


class ApiError(Exception):
    REASONS = {
        400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
        405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
        422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
        504: "Timeout",
    }  # fmt: skip

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict:
        return status_body(self.code, self.message, self.reason, self.details)


def status_body(code, message, reason, details=None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(res: Resource, name: str) -> dict:
    d = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = res.name
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified()} "{name}" not found', "NotFound", _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, f'{res.qualified()} "{name}" already exists', "AlreadyExists", _details(res, name))


def forbidden(res: Resource, name: str, why: str, causes=None) -> ApiError:
    msg = (
        f'{res.qualified()} "{name}" is forbidden: {why}'
        if name
        else f"{res.qualified()} is forbidden: {why}"
    )
    details = _details(res, name)
    if causes:
        details["causes"] = causes
    return ApiError(403, msg, "Forbidden", details)


def invalid(res: Resource, name: str, errs: list) -> ApiError:
    agg = str(errs[0]) if len(errs) == 1 else "[" + ", ".join(map(str, errs)) + "]"
    details = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.kind
    details["causes"] = [{"reason": e.reason(), "message": e.body(), "field": e.field} for e in errs]
    return ApiError(422, f'{res.qualified_kind()} "{name}" is invalid: {agg}', "Invalid", details)


def conflict(res: Resource, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.qualified()} "{name}": {why}',
        "Conflict",
        _details(res, name),
    )


# --- selectors ----------------------------------------------------------------------------

_SEL_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=(),]+)")


def parse_label_selector(text: str) -> list[tuple]:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` -> requirements (key, op, values).
    Raises ValueError with the real server's wording for a malformed selector."""
    reqs = []
    if not text or not text.strip():
        return reqs
    tokens = _SEL_TOKEN.findall(text)
    if "".join(tokens).replace(" ", "") != re.sub(r"\s+", "", text):
        raise ValueError(f"unable to parse requirement: {text}")
    i = 0

    def take():
        nonlocal i
        if i >= len(tokens):
            raise ValueError(f"unable to parse requirement: found '', expected: identifier, in '{text}'")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        tok = take()
        if tok == "!":
            key = take()
            reqs.append((key, "!", []))
        else:
            key = tok
            op = tokens[i] if i < len(tokens) else ","
            if op in ("=", "==", "!="):
                i += 1
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    i += 1
                reqs.append((key, "!=" if op == "!=" else "=", [value]))
            elif op in ("in", "notin"):
                i += 1
                if take() != "(":
                    raise ValueError(f"unable to parse requirement: found '{tokens[i - 1]}', expected: '('")
                values = []
                while True:
                    t = take()
                    if t == ")":
                        break
                    if t == ",":
                        continue
                    values.append(t)
                reqs.append((key, op, values))
            elif op == ",":
                reqs.append((key, "exists", []))
            else:
                raise ValueError(
                    f"unable to parse requirement: found '{op}', expected: in, notin, =, ==, !=, gt, lt"
                )
        for key, _, _ in reqs[-1:]:
            errs = validation.qualified_name(key)
            if errs:
                raise ValueError(
                    f"unable to parse requirement: invalid label key \"{key}\": {'; '.join(errs)}"
                )
        if i < len(tokens):
            if tokens[i] != ",":
                raise ValueError(f"unable to parse requirement: found '{tokens[i]}', expected: ','")
            i += 1
    return reqs


def labels_match(reqs: list[tuple], labels: dict) -> bool:
    for key, op, values in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and (not has or v != values[0]):
            return False
        if op == "!=" and has and v == values[0]:
            return False
        if op == "in" and (not has or v not in values):
            return False
        if op == "notin" and has and v in values:
            return False
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
    return True


FIELD_SELECTORS = {
    "pods": ["metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
             "spec.schedulerName", "spec.serviceAccountName", "status.phase", "status.podIP",
             "status.nominatedNodeName"],
    "events": ["metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.namespace",
               "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
               "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "source", "type"],
    "namespaces": ["metadata.name", "status.phase"],
    "secrets": ["metadata.name", "metadata.namespace", "type"],
}  # fmt: skip


def parse_field_selector(res: Resource, text: str) -> list[tuple]:
    reqs = []
    if not text:
        return reqs
    allowed = FIELD_SELECTORS.get(res.name, ["metadata.name", "metadata.namespace"])
    for part in text.split(","):
        m = re.fullmatch(r"\s*([^=!]+?)\s*(!=|==|=)\s*(.*?)\s*", part)
        if not m:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{part}'")
        key, op, value = m.groups()
        if key not in allowed:
            raise ApiError(400, f"field label not supported: {key}")
        reqs.append((key, "!=" if op == "!=" else "=", value))
    return reqs


def field_value(obj: dict, path: str) -> str:
    cur = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def fields_match(reqs, obj) -> bool:
    for key, op, value in reqs:
        actual = field_value(obj, key)
        if (op == "=") != (actual == value):
            return False
    return True


# --- store --------------------------------------------------------------------------------


class Event:
    __slots__ = ("rv", "type", "res", "ns", "obj", "old")

    def __init__(self, rv, type_, res, ns, obj, old):
        self.rv, self.type, self.res, self.ns, self.obj, self.old = rv, type_, res, ns, obj, old


class Store:
    """Every object in memory; one global resourceVersion; a bounded history of changes for
    watches. Stored objects are never mutated: every change stores a new copy."""

    def __init__(self, history: int):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 0
        self.objects: dict[tuple, dict] = {}
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self.compacted_rv = 0  # events at or below this rv are gone from the history
        self.closed = False

    def _record(self, type_, res, ns, obj, old):
        if len(self.history) == self.history.maxlen:
            self.compacted_rv = self.history[0].rv
        self.history.append(Event(self.rv, type_, res, ns, obj, old))
        self.cond.notify_all()

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def get(self, res: Resource, ns: str, name: str) -> dict | None:
        with self.lock:
            return self.objects.get((res.name, ns, name))

    def items(self, res: Resource, ns: str | None) -> list[dict]:
        with self.lock:
            keys = sorted(k for k in self.objects if k[0] == res.name and (ns is None or k[1] == ns))
            return [self.objects[k] for k in keys]

    def insert(self, res: Resource, ns: str, obj: dict) -> dict:
        with self.lock:
            key = (res.name, ns, obj["metadata"]["name"])
            if key in self.objects:
                raise already_exists(res, key[2])
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self.next_rv()
            self.objects[key] = obj
            self._record("ADDED", res, ns, obj, None)
            return obj

    def replace(self, res: Resource, ns: str, name: str, fn) -> dict | None:
        """Applies fn to a copy of the stored object; stores and returns the result (MODIFIED),
        or None when the object is gone. fn may return False to leave the object unchanged."""
        with self.lock:
            key = (res.name, ns, name)
            old = self.objects.get(key)
            if old is None:
                return None
            new = copy.deepcopy(old)
            if fn(new) is False:
                return old
            new["metadata"]["resourceVersion"] = self.next_rv()
            self.objects[key] = new
            self._record("MODIFIED", res, ns, new, old)
            return new

    def remove(self, res: Resource, ns: str, name: str) -> dict | None:
        with self.lock:
            key = (res.name, ns, name)
            old = self.objects.pop(key, None)
            if old is None:
                return None
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = self.next_rv()
            self._record("DELETED", res, ns, gone, old)
            return gone

    def dependents(self, uid: str) -> list[tuple]:
        with self.lock:
            return [
                k
                for k, o in self.objects.items()
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
            ]


# --- test hooks: stats and faults -----------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}
        self.total = 0

    def count(self, verb: str, resource: str):
        with self.lock:
            self.total += 1
            by = self.counts.setdefault(verb, {})
            by[resource] = by.get(resource, 0) + 1

    def snapshot(self) -> dict:
        with self.lock:
            return {"total": self.total, "requests": copy.deepcopy(self.counts)}

    def reset(self):
        with self.lock:
            self.counts.clear()
            self.total = 0


class Faults:
    """Rules {"verb", "resource", "namespace"?, "name"?, "code"?, "message"?, "delay"?, "times"?}:
    a matching request waits `delay` seconds, then fails with `code` (if given) for the first
    `times` matches (default: every match). Node knobs: "pod_start_delay" (seconds before a
    scheduled pod's containers start), "namespace_finalize_delay" (seconds a deleted namespace
    stays Terminating before its content is removed)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules: list[dict] = []
        self.pod_start_delay = 0.0
        self.namespace_finalize_delay = 0.0

    def set(self, body: dict):
        rules = body.get("rules", [])
        if not isinstance(rules, list) or not all(
            isinstance(r, dict) and r.get("verb") and r.get("resource") for r in rules
        ):
            raise ApiError(400, "faults: rules must be a list of objects with verb and resource")
        for key in body:
            if key not in ("rules", "pod_start_delay", "namespace_finalize_delay"):
                raise ApiError(400, f"faults: unknown key {key!r}")
        with self.lock:
            self.rules = [dict(r) for r in rules]
            self.pod_start_delay = float(body.get("pod_start_delay", 0))
            self.namespace_finalize_delay = float(body.get("namespace_finalize_delay", 0))

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "rules": copy.deepcopy(self.rules),
                "pod_start_delay": self.pod_start_delay,
                "namespace_finalize_delay": self.namespace_finalize_delay,
            }

    def match(self, verb, resource, ns, name) -> dict | None:
        with self.lock:
            for r in self.rules:
                if r["verb"] not in (verb, "*") or r["resource"] not in (resource, "*"):
                    continue
                if r.get("namespace") not in (None, ns) or r.get("name") not in (None, name):
                    continue
                if r.get("times") is not None:
                    if r["times"] <= 0:
                        continue
                    r["times"] -= 1
                return dict(r)
        return None


# --- the API ------------------------------------------------------------------------------


class Api:
    def __init__(self, args):
        self.args = args
        self.store = Store(args.watch_history)
        self.stats = Stats()
        self.faults = Faults()
        self.schemas = validation.SchemaValidator(args.schema_version)
        self.ip_counter = 0
        self.node = node_sim.Node(self, args)
        self.started = now_rfc3339()
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease", *args.namespace]:
            self.create(
                self.res("namespaces"),
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                {},
            )

    @staticmethod
    def res(name: str) -> Resource:
        return next(r for r in RESOURCES if r.name == name)

    # -- create ----------------------------------------------------------------------------

    def create(self, res: Resource, ns: str | None, body, query) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "the object provided is unrecognized (must be of type object)")
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        if body["apiVersion"] != res.api_version:
            raise ApiError(
                400,
                f"the API version in the data ({body['apiVersion']}) does not match the expected API version ({res.api_version})",
            )
        if body["kind"] != res.kind:
            raise ApiError(
                400, f"the object provided is unrecognized (kind {body['kind']} is not a {res.kind})"
            )
        meta = body.get("metadata")
        if meta is None:
            body["metadata"] = meta = {}
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if res.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"
            name = meta["generateName"] + "".join(random.choice(alphabet) for _ in range(5))
            meta["name"] = name

        # Decoding: the strict schema (the real server drops unknown fields with a warning by
        # default; here they are an error, so that a client that writes them is caught).
        schema_errs = self.schemas.errors(body)
        if schema_errs:
            raise invalid(res, name, schema_errs)
        obj = strip_nulls(body)
        meta = obj["metadata"]

        # Admission: namespace lifecycle, service accounts.
        if res.namespaced:
            self.admit_namespace(res, ns, name)
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if res.name == "pods":
            self.default_pod(obj)
            sa = obj["spec"]["serviceAccountName"]
            if not self.store.get(self.res("serviceaccounts"), ns, sa):
                raise forbidden(
                    res, name, f'error looking up service account {ns}/{sa}: serviceaccount "{sa}" not found'
                )
        elif res.name == "rolebindings":
            obj.get("roleRef", {}).setdefault("apiGroup", "")
            if not obj.get("roleRef", {}).get("apiGroup"):
                obj["roleRef"]["apiGroup"] = RBAC_GROUP
            for s in obj.get("subjects") or []:
                if s.get("kind") in ("User", "Group") and not s.get("apiGroup"):
                    s["apiGroup"] = RBAC_GROUP
        self.default_other(res, obj)

        errs = validation.validate_object(res.name, obj)
        if errs:
            raise invalid(res, name, errs)
        if query.get("dryRun"):
            return obj

        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        with self.store.lock:
            if res.namespaced:  # re-checked under the lock: a namespace being deleted meanwhile
                self.admit_namespace(res, ns, name)
            stored = self.store.insert(res, ns or "", obj)
            if res.name == "namespaces":
                self.populate_namespace(name)
        if res.name == "pods":
            self.node.pod_created(ns, name, stored["metadata"]["uid"])
        return stored

    def admit_namespace(self, res, ns, name):
        nso = self.store.get(self.res("namespaces"), "", ns)
        if nso is None:
            raise ApiError(
                404, f'namespaces "{ns}" not found', "NotFound", {"name": ns, "kind": "namespaces"}
            )
        if nso.get("status", {}).get("phase") == "Terminating":
            raise forbidden(
                res,
                name,
                f"unable to create new content in namespace {ns} because it is being terminated",
                [
                    {
                        "reason": "NamespaceTerminating",
                        "message": f"namespace {ns} is being terminated",
                        "field": "metadata.namespace",
                    }
                ],
            )

    def populate_namespace(self, ns):
        """What the controllers add to every new namespace (synchronously here)."""
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "kube-root-ca.crt",
                "namespace": ns,
                "annotations": {"kubernetes.io/description": "fake CA"},
            },
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n"},
        }
        for res, obj in ((self.res("serviceaccounts"), sa), (self.res("configmaps"), cm)):
            obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
            self.store.insert(res, ns, obj)

    @staticmethod
    def default_pod(pod):
        spec = pod.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = sa
        spec.setdefault(
            "tolerations",
            [
                {
                    "key": f"node.kubernetes.io/{t}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for t in ("not-ready", "unreachable")
            ],
        )
        qos = "BestEffort"
        for c in spec.get("containers") or []:
            image = c.get("image") or ""
            tag = image.rsplit("/", 1)[-1]
            c.setdefault(
                "imagePullPolicy", "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"
            )
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            if c["resources"].get("requests") or c["resources"].get("limits"):
                qos = "Burstable"
        pod["status"] = {"phase": "Pending", "qosClass": qos}

    def default_other(self, res, obj):
        if res.name == "namespaces":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"].get(
                "name", ""
            )
        elif res.name == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec["type"] != "ExternalName":
                if not spec.get("clusterIP"):
                    self.ip_counter += 1
                    spec["clusterIP"] = f"10.96.{(self.ip_counter >> 8) & 255}.{self.ip_counter & 255}"
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            obj["status"] = {"loadBalancer": {}}
        elif res.name == "secrets":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            for k, v in string_data.items():
                obj.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()
        elif res.name == "persistentvolumeclaims":
            obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
            obj["status"] = {"phase": "Pending"}
        elif res.name == "persistentvolumes":
            obj.setdefault("spec", {}).setdefault("persistentVolumeReclaimPolicy", "Retain")
            obj["spec"].setdefault("volumeMode", "Filesystem")
            obj["status"] = {"phase": "Available"}

    # -- read ------------------------------------------------------------------------------

    def get(self, res, ns, name) -> dict:
        obj = self.store.get(res, ns or "", name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def list(self, res, ns, query) -> dict:
        labels = self.label_reqs(query)
        fields = parse_field_selector(res, query.get("fieldSelector", ""))
        with self.store.lock:
            rv = str(self.store.rv)
            items = [
                o
                for o in self.store.items(res, ns)
                if labels_match(labels, o["metadata"].get("labels") or {})
            ]
        items = [o for o in items if fields_match(fields, o)]
        meta = {"resourceVersion": rv}
        start = 0
        if query.get("continue"):
            try:
                token = json.loads(base64.b64decode(query["continue"]))
                rv, after = token["rv"], token["start"]
            except (ValueError, KeyError, TypeError) as e:
                raise ApiError(400, f"continue key is not valid: {e}") from None
            keys = [(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in items]
            start = next((i for i, k in enumerate(keys) if list(k) > after), len(items))
            meta["resourceVersion"] = rv
        limit = int(query.get("limit") or 0)
        page = items[start:]
        if limit > 0 and len(page) > limit:
            page = page[:limit]
            last = page[-1]["metadata"]
            token = {"rv": meta["resourceVersion"], "start": [last.get("namespace", ""), last["name"]]}
            meta["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        # The real server leaves kind and apiVersion out of list items.
        out = []
        for o in page:
            o = dict(o)
            o.pop("kind", None)
            o.pop("apiVersion", None)
            out.append(o)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": out}

    @staticmethod
    def label_reqs(query):
        try:
            return parse_label_selector(query.get("labelSelector", ""))
        except ValueError as e:
            raise ApiError(400, str(e)) from None

    # -- delete ----------------------------------------------------------------------------

    def delete(self, res, ns, name, options) -> dict:
        ns = ns or ""
        obj = self.store.get(res, ns, name)
        if obj is None:
            raise not_found(res, name)
        precond = options.get("preconditions") or {}
        if precond.get("uid") and precond["uid"] != obj["metadata"]["uid"]:
            raise conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {precond['uid']}, UID in object meta: {obj['metadata']['uid']}",
            )
        if res.name == "namespaces":
            return self.delete_namespace(name)
        if res.name == "pods":
            return self.delete_pod(ns, name, options.get("gracePeriodSeconds"))
        gone = self.store.remove(res, ns, name)
        if gone is None:
            raise not_found(res, name)
        self.collect_garbage(gone["metadata"]["uid"])
        if res.deleted_object:
            return gone
        details = _details(res, name)
        details["uid"] = gone["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def delete_pod(self, ns, name, grace) -> dict:
        res = self.res("pods")
        obj = self.store.get(res, ns, name)
        if grace is None:
            grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
        grace = max(0, int(grace))
        if grace > 0 and self.node.has_process(ns, name):

            def mark(pod):
                meta = pod["metadata"]
                current = meta.get("deletionGracePeriodSeconds")
                if current is not None and current <= grace:
                    return False
                meta["deletionTimestamp"] = now_rfc3339(grace)
                meta["deletionGracePeriodSeconds"] = grace

            marked = self.store.replace(res, ns, name, mark)
            if marked is None:
                raise not_found(res, name)
            self.node.terminate(ns, name, grace)
            return marked

        def final(pod):
            pod["metadata"]["deletionTimestamp"] = now_rfc3339()
            pod["metadata"]["deletionGracePeriodSeconds"] = 0

        with self.store.lock:
            marked = self.store.replace(res, ns, name, final)
            if marked is None:
                raise not_found(res, name)
            gone = self.store.remove(res, ns, name)
        self.node.kill(ns, name)
        self.collect_garbage(gone["metadata"]["uid"])
        return gone

    def pod_terminated(self, ns, name):
        """The node reports a deleting pod's containers gone: the pod object goes away."""
        gone = self.store.remove(self.res("pods"), ns, name)
        if gone is not None:
            self.collect_garbage(gone["metadata"]["uid"])

    def collect_garbage(self, uid):
        """The garbage collector: dependents (ownerReferences by uid) go with their owner."""
        for resname, ns, name in self.store.dependents(uid):
            res = self.res(resname)
            try:
                self.delete(res, ns, name, {"gracePeriodSeconds": 0})
            except ApiError:
                pass

    def delete_namespace(self, name) -> dict:
        res = self.res("namespaces")
        with self.store.lock:
            obj = self.store.get(res, "", name)
            if obj is None:
                raise not_found(res, name)
            if obj["status"].get("phase") == "Terminating":
                raise conflict(
                    res,
                    name,
                    "The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.",
                )

            def terminating(o):
                o["metadata"]["deletionTimestamp"] = now_rfc3339()
                o["metadata"]["deletionGracePeriodSeconds"] = 0
                o["status"]["phase"] = "Terminating"

            marked = self.store.replace(res, "", name, terminating)
        threading.Thread(target=self.finalize_namespace, args=(name,), daemon=True, name=f"ns-{name}").start()
        return marked

    def finalize_namespace(self, name):
        """The namespace controller: delete everything in it, wait for pods to go, then purge."""
        time.sleep(self.faults.snapshot()["namespace_finalize_delay"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with self.store.lock:
                left = [k for k in self.store.objects if k[1] == name and k[0] != "namespaces"]
            if not left:
                break
            for resname, ns, oname in left:
                res = self.res(resname)
                if resname == "pods":
                    pod = self.store.get(res, ns, oname)
                    if pod is None or pod["metadata"].get("deletionTimestamp"):
                        continue
                try:
                    self.delete(res, ns, oname, {})
                except ApiError:
                    pass
            time.sleep(0.05)
        self.store.remove(self.res("namespaces"), "", name)

    def delete_collection(self, res, ns, query, options) -> dict:
        listed = self.list(res, ns, query)
        for o in listed["items"]:
            try:
                self.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], options)
            except ApiError:
                pass
        return listed

    # -- update ----------------------------------------------------------------------------

    def update(self, res, ns, name, body, subresource=None) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "the object provided is unrecognized (must be of type object)")
        current = self.get(res, ns, name)
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise ApiError(400, "the name of the object does not match the name on the URL")
        schema_errs = self.schemas.errors(body)
        if schema_errs:
            raise invalid(res, name, schema_errs)
        want_rv = (body.get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != current["metadata"]["resourceVersion"]:
            raise conflict(
                res,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        new = strip_nulls(body)

        def apply(obj):
            keep = {
                k: obj["metadata"][k]
                for k in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp")
                if k in obj["metadata"]
            }
            if subresource == "status":
                obj["status"] = new.get("status", {})
                return
            status = obj.get("status")
            obj.clear()
            obj.update(new)
            obj["metadata"].update(keep)
            if status is not None:
                obj["status"] = status

        errs = validation.validate_object(
            res.name, {**current, **{k: v for k, v in new.items() if k != "status"}}
        )
        if errs:
            raise invalid(res, name, errs)
        out = self.store.replace(res, ns or "", name, apply)
        if out is None:
            raise not_found(res, name)
        return out

    def patch(self, res, ns, name, body, content_type, subresource=None) -> dict:
        current = self.get(res, ns, name)
        if content_type.startswith("application/json-patch+json"):
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json",
            )
        if content_type.startswith("application/apply-patch"):
            raise ApiError(415, "server-side apply is not supported by this fake API server")
        merged = merge_patch(copy.deepcopy(current), body)
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.update(res, ns, name, merged, subresource)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (strategic merge patches are applied the same way)."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


# --- HTTP ---------------------------------------------------------------------------------


def discovery(res_list, group, version) -> dict:
    resources = []
    for r in res_list:
        if (r.group, r.version) != (group, version):
            continue
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        if r.name not in ("namespaces",):
            verbs.insert(2, "deletecollection")
        if r.name == "events":
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        entry = {
            "name": r.name,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        }
        if r.short:
            entry["shortNames"] = r.short
        resources.append(entry)
        for sub in SUBRESOURCES.get(r.name, []):
            kind = "Pod" if sub == "log" else r.kind
            sub_verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
            resources.append(
                {
                    "name": f"{r.name}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": sub_verbs,
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"
    api: Api = None  # set by serve()

    def log_message(self, fmt, *args):  # the request log is written by log_request below
        pass

    def log_request(self, code="-", size="-"):
        log = self.server.request_log
        if log:
            log.write(f"{time.strftime('%H:%M:%S')} {self.command} {self.path} {code}\n")
            log.flush()

    # -- plumbing --------------------------------------------------------------------------

    def send_json(self, code: int, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, code: int, text: str):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_raw_body(self) -> bytes:
        """Reads the whole request body, so that a keep-alive connection stays in step even
        when the request is refused before its body is looked at."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def read_body(self):
        data = self.raw_body
        if not data.strip():
            return None
        if "protobuf" in self.headers.get("Content-Type", ""):
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json, application/yaml",
            )
        try:
            return json.loads(data)
        except ValueError as e:
            if self.headers.get("Content-Type", "").startswith("application/yaml"):
                import yaml

                return yaml.safe_load(data)
            raise ApiError(400, f"couldn't get version/kind; json parse error: {e}") from None

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def dispatch(self):
        api = self.api
        self.raw_body = self.read_raw_body()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts in (["healthz"], ["livez"], ["readyz"]):
                return self.send_text(200, "ok")
            if parts == ["version"]:
                return self.send_json(200, version_info(api.args.schema_version))
            if not self.authorized():
                api.stats.count("unauthorized", "-")
                return self.send_json(401, status_body(401, "Unauthorized", "Unauthorized"))
            if parts[:1] == ["fake"]:
                return self.fake_endpoint(parts[1:], query)
            return self.api_request(parts, query)
        except ApiError as e:
            self.send_json(e.code, e.status())
        except BrokenPipeError:
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a fake server reports its own bugs as 500s
            import traceback

            traceback.print_exc()
            self.send_json(
                500, status_body(500, f"Internal error occurred: {type(e).__name__}: {e}", "InternalError")
            )

    def authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header and self.api.args.anonymous:
            return True
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api.args.token

    # -- /fake -----------------------------------------------------------------------------

    def fake_endpoint(self, parts, query):
        api = self.api
        if parts == ["stats"]:
            if self.command == "DELETE":
                api.stats.reset()
                return self.send_json(200, api.stats.snapshot())
            snap = api.stats.snapshot()
            snap["resourceVersion"] = str(api.store.rv)
            snap["pods"] = api.node.snapshot()
            return self.send_json(200, snap)
        if parts == ["faults"]:
            if self.command == "POST":
                api.faults.set(self.read_body() or {})
            elif self.command == "DELETE":
                api.faults.set({})
            return self.send_json(200, api.faults.snapshot())
        raise ApiError(404, "the server could not find the requested resource", "NotFound", {})

    # -- /api, /apis -----------------------------------------------------------------------

    def api_request(self, parts, query):
        api = self.api
        if parts == ["api"]:
            return self.send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.server.address}
                    ],
                },
            )
        if parts == ["apis"]:
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [rbac_group()]})
        if parts == ["apis", RBAC_GROUP]:
            return self.send_json(200, rbac_group() | {"kind": "APIGroup", "apiVersion": "v1"})
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if not rest:
            if not any((r.group, r.version) == (group, version) for r in RESOURCES):
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            return self.send_json(200, discovery(RESOURCES, group, version))

        # [namespaces/{ns}/]{resource}[/{name}[/{sub}]]
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        res = BY_PATH.get((group, version, rest[0]))
        if res is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if ns is not None and not res.namespaced:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in SUBRESOURCES.get(res.name, []):
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if res.namespaced and name is not None and ns is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})

        method = self.command
        watching = query.get("watch") in ("1", "true", "True")
        verb = {
            "GET": "get" if name else ("watch" if watching else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(method)
        if verb is None or (method == "POST" and name) or (method in ("PUT", "PATCH") and not name):
            raise ApiError(
                405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {}
            )
        counted = f"{res.name}/{sub}" if sub else res.name
        api.stats.count(verb, counted)

        fault = api.faults.match(verb, counted, ns, name)
        if fault:
            if fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if fault.get("code"):
                code = int(fault["code"])
                msg = fault.get("message") or f"Internal error occurred: injected fault for {verb} {counted}"
                raise ApiError(code, msg, fault.get("reason"), _details(res, name or ""))

        if verb == "get":
            if sub == "log":
                return self.send_text(200, api.node.logs(ns, name, api.get(res, ns, name)))
            return self.send_json(200, api.get(res, ns, name))
        if verb == "list":
            return self.send_json(200, api.list(res, ns, query))
        if verb == "watch":
            return self.watch(res, ns, query)
        if verb == "create":
            if res.namespaced and ns is None:
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            obj = api.create(res, ns, self.read_body(), query)
            return self.send_json(201, obj)
        if verb == "delete":
            options = self.read_body() or {}
            if "gracePeriodSeconds" in query:
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            if "propagationPolicy" in query:
                options["propagationPolicy"] = query["propagationPolicy"]
            return self.send_json(200, api.delete(res, ns, name, options))
        if verb == "deletecollection":
            options = self.read_body() or {}
            return self.send_json(200, api.delete_collection(res, ns, query, options))
        if verb == "update":
            return self.send_json(200, api.update(res, ns, name, self.read_body(), sub))
        if verb == "patch":
            return self.send_json(
                200, api.patch(res, ns, name, self.read_body(), self.headers.get("Content-Type", ""), sub)
            )

    # -- watch -----------------------------------------------------------------------------

    def watch(self, res, ns, query):
        api, store = self.api, self.api.store
        labels = api.label_reqs(query)
        fields = parse_field_selector(res, query.get("fieldSelector", ""))
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true", "True")
        send_initial = query.get("sendInitialEvents") in ("1", "true", "True")
        rv = query.get("resourceVersion", "")
        deadline = time.monotonic() + timeout
        bookmark_every = api.args.bookmark_interval

        def matches(obj):
            if obj is None:
                return False
            meta = obj["metadata"]
            if ns is not None and meta.get("namespace") != ns:
                return False
            return labels_match(labels, meta.get("labels") or {}) and fields_match(fields, obj)

        pending = []
        with store.lock:
            if rv in ("", "0") or send_initial:
                cursor = store.rv
                for obj in store.items(res, ns):
                    if matches(obj):
                        pending.append({"type": "ADDED", "object": obj})
                if send_initial and bookmarks:
                    pending.append(self.bookmark(res, cursor, initial_end=True))
            else:
                try:
                    cursor = int(rv)
                except ValueError:
                    raise ApiError(
                        400, f'invalid resource version: strconv.ParseUint: parsing "{rv}": invalid syntax'
                    ) from None
                if cursor < store.compacted_rv:
                    pending.append(
                        {
                            "type": "ERROR",
                            "object": status_body(
                                410,
                                f"too old resource version: {cursor} ({store.compacted_rv + 1})",
                                "Expired",
                            ),
                        }
                    )
                    cursor = None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.server.watches_open(+1)
        try:
            if self.stream_events(pending, cursor, matches, res, deadline, bookmarks, bookmark_every):
                self.wfile.write(b"0\r\n\r\n")  # the end of the chunked body: the watch ends
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.server.watches_open(-1)

    def stream_events(self, pending, cursor, matches, res, deadline, bookmarks, bookmark_every) -> bool:
        """Writes the watch's events until it times out or fails (True), or the client leaves."""
        store = self.api.store
        for ev in pending:
            self.write_chunk(ev)
        if cursor is None:
            return True
        last_bookmark = time.monotonic()
        while not store.closed:
            events = []
            with store.lock:
                if store.rv == cursor:
                    store.cond.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                if cursor < store.compacted_rv:
                    expired = f"too old resource version: {cursor} ({store.compacted_rv + 1})"
                    events.append({"type": "ERROR", "object": status_body(410, expired, "Expired")})
                    cursor = None
                else:
                    first = store.history[0].rv if store.history else store.rv + 1
                    for i in range(max(0, cursor + 1 - first), len(store.history)):
                        e = store.history[i]
                        if e.res is res:
                            ev = self.filtered(e, matches)
                            if ev:
                                events.append(ev)
                    cursor = store.rv
            for ev in events:
                self.write_chunk(ev)
            if cursor is None:
                return True
            now = time.monotonic()
            if now >= deadline:
                return True
            if bookmarks and now - last_bookmark >= bookmark_every:
                self.write_chunk(self.bookmark(res, cursor))
                last_bookmark = now
            if not events and self.client_gone():
                self.close_connection = True
                return False
        return True

    @staticmethod
    def filtered(e, matches) -> dict | None:
        """A change as a watcher with selectors sees it: an object that starts matching is
        ADDED, one that stops matching is DELETED (as the real watch cache does)."""
        cur_ok, old_ok = matches(e.obj), matches(e.old)
        if e.type == "DELETED":
            return {"type": "DELETED", "object": e.obj} if old_ok else None
        if cur_ok and (old_ok or e.type == "ADDED"):
            return {"type": e.type, "object": e.obj}
        if cur_ok:
            return {"type": "ADDED", "object": e.obj}
        if old_ok:
            gone = copy.deepcopy(e.old)
            gone["metadata"]["resourceVersion"] = str(e.rv)
            return {"type": "DELETED", "object": gone}
        return None

    @staticmethod
    def bookmark(res, rv, initial_end=False) -> dict:
        meta = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta},
        }

    def write_chunk(self, event):
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def client_gone(self) -> bool:
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if r:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False


def rbac_group() -> dict:
    gv = {"groupVersion": f"{RBAC_GROUP}/v1", "version": "v1"}
    return {"name": RBAC_GROUP, "versions": [gv], "preferredVersion": gv}


def version_info(schema_version: str) -> dict:
    major, minor = schema_version.split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{schema_version}-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "fake",
        "compiler": "fake",
        "platform": "linux/amd64",
    }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr, handler, request_log):
        super().__init__(addr, handler)
        self.request_log = request_log
        self._watch_lock = threading.Lock()
        self.open_watches = 0
        self.address = f"{addr[0]}:{self.server_address[1]}"

    def watches_open(self, delta):
        with self._watch_lock:
            self.open_watches += delta


def write_kubeconfig(path: Path, url: str, token: str, namespace: str = "default"):
    import textwrap

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f"""\
            apiVersion: v1
            kind: Config
            clusters:
            - name: fake
              cluster:
                server: {url}
            users:
            - name: fake
              user:
                token: {token}
            contexts:
            - name: fake
              context:
                cluster: fake
                user: fake
                namespace: {namespace}
            current-context: fake
            preferences: {{}}
            """))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="FAKE Kubernetes API server and node simulator (tests only)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port")
    p.add_argument("--token", required=True, help="the bearer token every request must carry")
    p.add_argument("--state-dir", required=True, type=Path, help="pod logs, connection files, request log")
    p.add_argument(
        "--images",
        default=None,
        help='known images: a JSON file (["repo[:tag]", {"image": ..., "run": ...}]) or a comma-separated list; '
        "default: any repository ending in kernel-py (in-pod launcher) or kernel-py-upstream (upstream's)",
    )
    p.add_argument(
        "--anonymous",
        action="store_true",
        help="also serve requests without an Authorization header (kubectl: client-go sends no "
        "credentials to a plain-HTTP server)",
    )
    p.add_argument("--kubeconfig-out", type=Path, default=None)
    p.add_argument("--ready-file", type=Path, default=None, help="written with the URL once serving")
    p.add_argument("--namespace", action="append", default=[], help="extra namespace to create at start")
    p.add_argument(
        "--schema-version", default="1.33.0", help="Kubernetes release whose schemas validate objects"
    )
    p.add_argument(
        "--watch-history", type=int, default=10000, help="changes kept for watches (older: 410 Expired)"
    )
    p.add_argument("--bookmark-interval", type=float, default=5.0, help="seconds between watch bookmarks")
    p.add_argument(
        "--image-backoff", type=float, default=2.0, help="seconds before ErrImagePull turns ImagePullBackOff"
    )
    p.add_argument("--node-cpu", default="8", help="allocatable cpu of fake-node")
    p.add_argument("--node-memory", default="32Gi", help="allocatable memory of fake-node")
    p.add_argument(
        "--python", default="/usr/bin/python3", help="python that runs in-pod launchers and kernels"
    )
    p.add_argument(
        "--eg-src",
        type=Path,
        default=Path(os.environ.get("KIP_TEST_EG_SRC", "/opt/kip-test/eg-src"))
        / "jupyter_enterprise_gateway-3.3.0",
        help="upstream Enterprise Gateway sources (for images ending in kernel-py-upstream)",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    api = Api(args)
    Handler.api = api
    request_log = open(args.state_dir / "requests.log", "a", buffering=1)
    server = Server((args.host, args.port), Handler, request_log)
    url = f"http://{args.host}:{server.server_address[1]}"
    if args.kubeconfig_out:
        write_kubeconfig(args.kubeconfig_out, url, args.token)

    def stop(signum, _frame):
        api.store.closed = True
        api.node.shutdown()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(url + "\n")
        tmp.rename(args.ready_file)
    print(url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        api.store.closed = True
        api.node.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
