"""Validation rules of the FAKE Kubernetes API server (tests only, not a real apiserver).

Two layers, in the order the real server applies their equivalents:

- `SchemaValidator`: the object against Kubernetes' own OpenAPI-derived JSON schema for one
  release, in the `-strict` flavour bundled with kubernetes-validate (unknown fields are errors).
- `validate_object`: the field rules the real server checks in code and no schema expresses:
  object names (DNS label / subdomain / path segment), label keys and values, container names,
  images, env names, resource quantities (requests <= limits), security context ranges,
  RoleBinding roleRef and subjects, Service ports.

Messages follow the real server's wording (k8s.io/apimachinery/pkg/util/validation and
k8s.io/kubernetes/pkg/apis/*/validation) so that a client's error handling is exercised with
what it would really receive.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + r"(\." + DNS1123_LABEL + r")*"
DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

LABEL_ERR = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    f"for validation is '{DNS1123_LABEL}')"
)
SUBDOMAIN_ERR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{DNS1123_SUBDOMAIN}')"
)
DNS1035_ERR = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    f"regex used for validation is '{DNS1035_LABEL}')"
)
LABEL_VALUE_ERR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
    f"or '12345', regex used for validation is '{LABEL_VALUE}')"
)
QUALIFIED_NAME_ERR = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{QUALIFIED_NAME}')"
)
ENV_NAME_ERR = (
    "a valid environment variable name must consist only of printable ASCII characters other than '='"
)
QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
QUANTITY_ERR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
SUFFIXES = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


class FieldError:
    """One field error, rendered like field.Error.Error() of apimachinery."""

    def __init__(self, kind: str, field: str, value=None, detail: str = ""):
        self.kind, self.field, self.value, self.detail = kind, field, value, detail

    def reason(self) -> str:
        return {
            "Invalid": "FieldValueInvalid",
            "Required": "FieldValueRequired",
            "Unsupported": "FieldValueNotSupported",
            "Duplicate": "FieldValueDuplicate",
            "Forbidden": "FieldValueForbidden",
            "TooLong": "FieldValueTooLong",
            "NotFound": "FieldValueNotFound",
        }.get(self.kind, "FieldValueInvalid")

    def body(self) -> str:
        """The message part after the field path (causes[].message)."""
        if self.kind == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.kind == "Forbidden":
            return f"Forbidden: {self.detail}"
        if self.kind == "Unsupported":
            return f"Unsupported value: {_render(self.value)}: {self.detail}"
        if self.kind == "NotFound":
            return f"Not found: {_render(self.value)}"
        if self.kind == "TooLong":
            return f"Too long: {self.detail}"
        if self.kind == "Duplicate":
            return f"Duplicate value: {_render(self.value)}"
        return f"Invalid value: {_render(self.value)}: {self.detail}"

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def _render(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


# --- names --------------------------------------------------------------------------------


def _name_errors(value: str, max_len: int, pattern: str, err: str, part: str = "") -> list[str]:
    """A name's length and pattern errors; `part` prefixes the length message ("name part ")."""
    errs = []
    if len(value) > max_len:
        errs.append(f"{part}must be no more than {max_len} characters")
    if not re.fullmatch(pattern, value):
        errs.append(err)
    return errs


def dns1123_label(value: str) -> list[str]:
    return _name_errors(value, 63, DNS1123_LABEL, LABEL_ERR)


def dns1123_subdomain(value: str) -> list[str]:
    return _name_errors(value, 253, DNS1123_SUBDOMAIN, SUBDOMAIN_ERR)


def dns1035_label(value: str) -> list[str]:
    return _name_errors(value, 63, DNS1035_LABEL, DNS1035_ERR)


def path_segment(value: str) -> list[str]:
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


NAME_RULES = {
    "namespaces": dns1123_label,
    "pods": dns1123_subdomain,
    "services": dns1035_label,
    "configmaps": dns1123_subdomain,
    "secrets": dns1123_subdomain,
    "serviceaccounts": dns1123_subdomain,
    "persistentvolumeclaims": dns1123_subdomain,
    "persistentvolumes": dns1123_subdomain,
    "events": dns1123_subdomain,
    "rolebindings": path_segment,
}


def qualified_name(value: str) -> list[str]:
    """IsQualifiedName: [prefix/]name, prefix a DNS subdomain, name <= 63 characters."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        errs = [f"prefix part {e}" for e in dns1123_subdomain(prefix)]
        if errs:
            return errs
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
            f"'123-abc', regex used for validation is '{QUALIFIED_NAME}') with an optional DNS "
            "subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        return ["name part must be non-empty"]
    return _name_errors(name, 63, QUALIFIED_NAME, QUALIFIED_NAME_ERR, part="name part ")


def label_value(value: str) -> list[str]:
    return _name_errors(value, 63, LABEL_VALUE, LABEL_VALUE_ERR)


# --- quantities ---------------------------------------------------------------------------


def parse_quantity(value) -> Decimal | None:
    """A resource.Quantity as a Decimal, or None when it does not parse."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = QUANTITY_RE.match(value)
    if not m:
        return None
    number, suffix = m.groups()
    try:
        n = Decimal(number)
    except InvalidOperation:
        return None
    if suffix in SUFFIXES:
        return n * SUFFIXES[suffix]
    if suffix[:1] in "eE":
        try:
            return n * (Decimal(10) ** int(suffix[1:]))
        except ValueError:
            return None
    return None


# --- image references ---------------------------------------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)


class ImageRef:
    """A parsed, normalised image reference (Docker's reference grammar)."""

    def __init__(self, domain: str, path: str, tag: str | None, digest: str | None):
        self.domain, self.path, self.tag, self.digest = domain, path, tag, digest

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_image(image: str) -> ImageRef | None:
    """Normalises like the container runtimes do: `python` -> `docker.io/library/python:latest`.
    None for a reference kubelet refuses (InvalidImageName)."""
    if not image or len(image) > 255:
        return None
    first, sep, _rest = image.partition("/")
    m = _REFERENCE.match(image)
    if sep and (("." in first or ":" in first or first == "localhost") or first != first.lower()):
        # The first component is a registry host (which may contain upper case letters).
        if not m or not m.group("domain"):
            return None
        domain, path = m.group("domain"), m.group("path")
    else:
        m = re.match(
            rf"^(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$",
            image,
        )
        if not m:
            return None
        domain, path = "docker.io", m.group("path")
        if "/" not in path:
            path = f"library/{path}"
    tag, digest = m.group("tag"), m.group("digest")
    if not tag and not digest:
        tag = "latest"
    return ImageRef(domain, path, tag, digest)


# --- schema -------------------------------------------------------------------------------


class SchemaValidator:
    """Validates objects against one release's strict JSON schemas, as bundled with
    kubernetes-validate. The validators are built once per kind (the definitions file is
    1.4 MB; kubernetes_validate.validate() would reload it for every object)."""

    def __init__(self, version: str):
        import importlib.util

        spec = importlib.util.find_spec("kubernetes_validate")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(
                "kubernetes_validate is not importable: run the fake API server with the python "
                "of the venv that tests/scripts/install-deps.sh creates (/opt/kip-test/venv)"
            )
        root = Path(list(spec.submodule_search_locations)[0]) / "kubernetes-json-schema"
        self.dir = root / f"v{version}-local-strict"
        if not self.dir.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.name.endswith("-local-strict"))
            raise RuntimeError(f"no strict schemas for Kubernetes {version} in {root}: {found}")
        self.version = version
        self._defs = None
        self._validators: dict[str, object] = {}

    def _validator(self, kind: str, api_version: str):
        import jsonschema
        from referencing import Registry, Resource

        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        key = f"{kind.lower()}-{group_version}"
        if key not in self._validators:
            if self._defs is None:
                self._defs = json.loads((self.dir / "_definitions.json").read_text())
            schema = json.loads((self.dir / f"{key}.json").read_text())
            registry = Registry().with_resources(
                [
                    (self._defs["$id"], Resource.from_contents(self._defs)),
                    (schema["$id"], Resource.from_contents(schema)),
                ]
            )
            self._validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
        return self._validators[key]

    def errors(self, obj: dict) -> list[FieldError]:
        out = []
        validator = self._validator(obj["kind"], obj["apiVersion"])
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            path = _field_path(e.absolute_path)
            if e.validator == "additionalProperties":
                allowed = set((e.schema or {}).get("properties", {}))
                for name in sorted(k for k in e.instance if k not in allowed):
                    field = f"{path}.{name}" if path else name
                    out.append(FieldError("Forbidden", field, detail=f'unknown field "{field}"'))
            elif e.validator == "required":
                missing = e.message.split("'")[1] if "'" in e.message else ""
                field = f"{path}.{missing}" if path else missing
                out.append(FieldError("Required", field))
            else:
                out.append(FieldError("Invalid", path or "<root>", e.instance, e.message))
        return out


def _field_path(parts) -> str:
    s = ""
    for p in parts:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


# --- field rules --------------------------------------------------------------------------


def _invalid(field: str, value, messages: list[str]) -> list[FieldError]:
    """One Invalid error per message a name rule gave for `value`."""
    return [FieldError("Invalid", field, value, msg) for msg in messages]


def _unsupported(field: str, value, supported: tuple[str, ...]) -> list[FieldError]:
    """An Unsupported error unless `value` is one of `supported` (listed in the message in the
    order given, as the real server lists them)."""
    if value in supported:
        return []
    listed = ", ".join(json.dumps(v) for v in supported)
    return [FieldError("Unsupported", field, value, f"supported values: {listed}")]


def _out_of_range(field: str, value, low: int, high: int) -> FieldError:
    return FieldError("Invalid", field, value, f"must be between {low} and {high}, inclusive")


def _unique_label(field: str, name: str, seen: set) -> list[FieldError]:
    """A list member's name (container, volume): required, a DNS label, unique among `seen`,
    which it joins."""
    if not name:
        return [FieldError("Required", field)]
    errs = _invalid(field, name, dns1123_label(name))
    if name in seen:
        errs.append(FieldError("Duplicate", field, name))
    seen.add(name)
    return errs


def validate_metadata(resource: str, obj: dict) -> list[FieldError]:
    meta = obj.get("metadata") or {}
    errs = []
    name = meta.get("name") or ""
    if not name:
        errs.append(FieldError("Required", "metadata.name", detail="name or generateName is required"))
    else:
        errs += _invalid("metadata.name", name, NAME_RULES.get(resource, dns1123_subdomain)(name))
    for key, value in (meta.get("labels") or {}).items():
        errs += _invalid("metadata.labels", key, qualified_name(key))
        if isinstance(value, str):
            errs += _invalid("metadata.labels", value, label_value(value))
    for key in meta.get("annotations") or {}:
        errs += _invalid("metadata.annotations", key, qualified_name(key.lower()))
    total = sum(len(k) + len(v or "") for k, v in (meta.get("annotations") or {}).items())
    if total > 256 * 1024:
        errs.append(FieldError("TooLong", "metadata.annotations", detail="may not be more than 262144 bytes"))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        if not ref.get("uid"):
            errs.append(
                FieldError("Invalid", f"metadata.ownerReferences[{i}].uid", "", "uid must not be empty")
            )
    return errs


def _validate_resources(path: str, resources: dict) -> list[FieldError]:
    errs = []
    parsed = {}
    for section in ("limits", "requests"):
        for name, value in (resources.get(section) or {}).items():
            q = parse_quantity(value)
            field = f"{path}.{section}[{name}]"
            if q is None:
                errs.append(FieldError("Invalid", field, value, QUANTITY_ERR))
                continue
            if q < 0:
                errs.append(FieldError("Invalid", field, value, "must be greater than or equal to 0"))
            parsed[(section, name)] = (q, value)
    for (section, name), (q, value) in parsed.items():
        if section != "requests" or ("limits", name) not in parsed:
            continue
        limit, limit_value = parsed[("limits", name)]
        if q > limit:
            errs.append(
                FieldError(
                    "Invalid",
                    f"{path}.requests",
                    value,
                    f"must be less than or equal to {name} limit of {limit_value}",
                )
            )
    return errs


def _validate_security_context(path: str, sc: dict) -> list[FieldError]:
    errs = []
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        v = sc.get(key)
        if isinstance(v, int) and not 0 <= v <= 2147483647:
            errs.append(_out_of_range(f"{path}.{key}", v, 0, 2147483647))
    return errs


def validate_pod(pod: dict) -> list[FieldError]:
    spec = pod.get("spec") or {}
    errs = []
    containers = spec.get("containers") or []
    if not containers:
        errs.append(FieldError("Required", "spec.containers"))
    names = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            path = f"spec.{kind}[{i}]"
            errs += _unique_label(f"{path}.name", c.get("name") or "", names)
            if not c.get("image"):
                errs.append(FieldError("Required", f"{path}.image"))
            for j, env in enumerate(c.get("env") or []):
                env_name = env.get("name") or ""
                if not env_name:
                    errs.append(FieldError("Required", f"{path}.env[{j}].name"))
                elif "=" in env_name or any(not 32 <= ord(ch) <= 126 for ch in env_name):
                    errs.append(FieldError("Invalid", f"{path}.env[{j}].name", env_name, ENV_NAME_ERR))
            errs += _validate_resources(f"{path}.resources", c.get("resources") or {})
            errs += _validate_security_context(f"{path}.securityContext", c.get("securityContext") or {})
            for j, port in enumerate(c.get("ports") or []):
                p = port.get("containerPort")
                if isinstance(p, int) and not 1 <= p <= 65535:
                    errs.append(_out_of_range(f"{path}.ports[{j}].containerPort", p, 1, 65535))
    policy = spec.get("restartPolicy")
    if policy is not None:
        errs += _unsupported("spec.restartPolicy", policy, ("Always", "OnFailure", "Never"))
    errs += _validate_security_context("spec.securityContext", spec.get("securityContext") or {})
    volumes = set()
    for i, v in enumerate(spec.get("volumes") or []):
        errs += _unique_label(f"spec.volumes[{i}].name", v.get("name") or "", volumes)
    for i, c in enumerate(containers):
        for j, m in enumerate(c.get("volumeMounts") or []):
            if m.get("name") not in volumes:
                errs.append(
                    FieldError("NotFound", f"spec.containers[{i}].volumeMounts[{j}].name", m.get("name"))
                )
            if not m.get("mountPath"):
                errs.append(FieldError("Required", f"spec.containers[{i}].volumeMounts[{j}].mountPath"))
    return errs


RBAC_GROUP = ("rbac.authorization.k8s.io",)


def validate_rolebinding(rb: dict) -> list[FieldError]:
    ref = rb.get("roleRef") or {}
    errs = _unsupported("roleRef.kind", ref.get("kind", ""), ("Role", "ClusterRole"))
    errs += _unsupported("roleRef.apiGroup", ref.get("apiGroup", ""), RBAC_GROUP)
    if not ref.get("name"):
        errs.append(FieldError("Required", "roleRef.name"))
    else:
        errs += _invalid("roleRef.name", ref["name"], path_segment(ref["name"]))
    for i, s in enumerate(rb.get("subjects") or []):
        path = f"subjects[{i}]"
        if not s.get("name"):
            errs.append(FieldError("Required", f"{path}.name"))
        kind = s.get("kind")
        if kind == "ServiceAccount":
            if s.get("apiGroup", ""):
                errs += _unsupported(f"{path}.apiGroup", s["apiGroup"], ("",))
            if s.get("name"):
                errs += _invalid(f"{path}.name", s["name"], dns1123_subdomain(s["name"]))
        elif kind in ("User", "Group"):
            errs += _unsupported(f"{path}.apiGroup", s.get("apiGroup", ""), RBAC_GROUP)
        else:
            errs += _unsupported(f"{path}.kind", kind or "", ("ServiceAccount", "User", "Group"))
    return errs


def validate_service(svc: dict) -> list[FieldError]:
    spec = svc.get("spec") or {}
    stype = spec.get("type", "ClusterIP")
    errs = _unsupported("spec.type", stype, ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"))
    ports = spec.get("ports") or []
    if stype != "ExternalName" and spec.get("clusterIP") != "None" and not ports:
        errs.append(FieldError("Required", "spec.ports"))
    for i, p in enumerate(ports):
        port = p.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            errs.append(_out_of_range(f"spec.ports[{i}].port", port, 1, 65535))
        if len(ports) > 1 and not p.get("name"):
            errs.append(FieldError("Required", f"spec.ports[{i}].name"))
    return errs


KIND_RULES = {"pods": validate_pod, "rolebindings": validate_rolebinding, "services": validate_service}


def validate_object(resource: str, obj: dict) -> list[FieldError]:
    """Every field rule for one object about to be created (after defaulting)."""
    errs = validate_metadata(resource, obj)
    rule = KIND_RULES.get(resource)
    if rule:
        errs += rule(obj)
    return errs
