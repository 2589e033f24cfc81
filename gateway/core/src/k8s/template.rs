//! The kernel-pod manifest: a spec's `scripts/kernel-pod.yaml.j2` (or [`BUILTIN_POD_TEMPLATE`])
//! rendered with the pod's `KERNEL_*` variables the way `launch_kubernetes.py` renders it with
//! Jinja2, then parsed into the documents to create.
//!
//! Rendering matches Jinja2 byte for byte for the templates upstream ships and for templates in
//! the same spirit: `trim_blocks`, `lstrip_blocks`, no auto-escaping, Jinja2's lenient
//! undefined values, Jinja2's `int` filter, upstream's `yaml_safe` filter (PyYAML's output),
//! and values printed as Python prints them (`True`, `None`, `{'name': 'x'}`). Known
//! differences: the `~` operator and the `string`/`join` filters format booleans, `none`,
//! lists and maps as MiniJinja does; `int` only takes base 10; `KERNEL_VOLUMES` and
//! `KERNEL_VOLUME_MOUNTS` are read as YAML 1.2 (`yes`, `on`, `0o17`, `1:30` and dates stay
//! strings, which PyYAML's YAML 1.1 would convert; anchors are expanded, so PyYAML's
//! `&id001` references never appear in `yaml_safe`'s output); so is the rendered manifest.
//!
//! [`render_manifest`] adds a guard upstream lacks: a variable's value may fill the template's
//! slots but never change the manifest's structure (documents, kinds, keys, sequence lengths),
//! whatever the template does with it. See [`check_structure`].

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value,
    syntax::SyntaxConfig,
    value::{Kwargs, ValueKind},
};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::{
    python::{self, PyInt},
    pyyaml::{self, Node},
};

/// The kernel-pod template used for specs without `scripts/kernel-pod.yaml.j2`. It renders the
/// same objects as upstream's stock template: a Pod labelled for the gateway, its security
/// context from `KERNEL_UID`/`KERNEL_GID`, resources from `KERNEL_CPUS`, `KERNEL_MEMORY`,
/// `KERNEL_GPUS` and their `_LIMIT` variants, `KERNEL_WORKING_DIR`, and the client's
/// `KERNEL_VOLUME_MOUNTS` and `KERNEL_VOLUMES`. Every client value goes through `yaml_safe`.
pub const BUILTIN_POD_TEMPLATE: &str = r#"# Kernel pod of the gateway's built-in launcher. Variables are the pod's KERNEL_* environment
# variables, lower-cased; every value a client can set is quoted by yaml_safe.
apiVersion: v1
kind: Pod
metadata:
  name: {{ kernel_pod_name | yaml_safe }}
  namespace: {{ kernel_namespace | yaml_safe }}
  labels:
    app: enterprise-gateway
    component: kernel
    source: kernel-pod.yaml
    kernel_id: {{ kernel_id | yaml_safe }}
  annotations:
    # Evicting a kernel loses its state.
    cluster-autoscaler.kubernetes.io/safe-to-evict: "false"
spec:
  restartPolicy: Never
  serviceAccountName: {{ kernel_service_account_name | yaml_safe }}
{% if kernel_uid is defined or kernel_gid is defined %}
  securityContext:
    fsGroup: 100
{% if kernel_uid is defined %}
    runAsUser: {{ kernel_uid | int }}
{% endif %}
{% if kernel_gid is defined %}
    runAsGroup: {{ kernel_gid | int }}
{% endif %}
{% endif %}
  containers:
  - name: {{ kernel_pod_name | yaml_safe }}
    image: {{ kernel_image | yaml_safe }}
    # The launcher fills the environment.
    env:
{% set has_requests = kernel_cpus is defined or kernel_memory is defined or kernel_gpus is defined %}
{% set has_limits = kernel_cpus_limit is defined or kernel_memory_limit is defined
   or kernel_gpus_limit is defined %}
{% if has_requests or has_limits %}
    resources:
{% if has_requests %}
      requests:
{% if kernel_cpus is defined %}
        cpu: {{ kernel_cpus | yaml_safe }}
{% endif %}
{% if kernel_memory is defined %}
        memory: {{ kernel_memory | yaml_safe }}
{% endif %}
{% if kernel_gpus is defined %}
        nvidia.com/gpu: {{ kernel_gpus | yaml_safe }}
{% endif %}
{% endif %}
{% if has_limits %}
      limits:
{% if kernel_cpus_limit is defined %}
        cpu: {{ kernel_cpus_limit | yaml_safe }}
{% endif %}
{% if kernel_memory_limit is defined %}
        memory: {{ kernel_memory_limit | yaml_safe }}
{% endif %}
{% if kernel_gpus_limit is defined %}
        nvidia.com/gpu: {{ kernel_gpus_limit | yaml_safe }}
{% endif %}
{% endif %}
{% endif %}
{% if kernel_working_dir %}
    workingDir: {{ kernel_working_dir | yaml_safe }}
{% endif %}
    volumeMounts:
{% for mount in kernel_volume_mounts or [] %}
    - {{ mount | yaml_safe }}
{% endfor %}
  volumes:
{% for volume in kernel_volumes or [] %}
  - {{ volume | yaml_safe }}
{% endfor %}
"#;

/// Why a manifest could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `KERNEL_VOLUMES`/`KERNEL_VOLUME_MOUNTS` is not a YAML list of mappings.
    #[error("{name} must be a YAML list of mappings: {detail}")]
    NotListOfMappings { name: String, detail: String },
    /// The template does not compile or fails while rendering.
    #[error("kernel-pod template: {0}")]
    Render(String),
    /// The rendering is not YAML, or a document is not a mapping.
    #[error("rendered kernel-pod manifest: {0}")]
    Manifest(String),
    #[error("Unexpected resource kind '{0}' in rendered manifest")]
    UnexpectedKind(String),
    #[error("Rendered manifest contains {count} '{kind}' documents (max 1)")]
    TooMany { kind: String, count: usize },
    #[error("Rendered manifest contains no Pod document")]
    NoPod,
    /// Values that change the manifest's structure.
    #[error(
        "{} would change the structure of the kernel-pod manifest ({detail})",
        variables.join(", ")
    )]
    Injection {
        variables: Vec<String>,
        detail: String,
    },
}

impl TemplateError {
    /// 400 for what the client's values cause, 500 for the template's own faults.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotListOfMappings { .. } | Self::Injection { .. } => 400,
            _ => 500,
        }
    }
}

/// The variables upstream's YAML-parses; all others are strings.
pub const YAML_VARIABLES: [&str; 2] = ["KERNEL_VOLUME_MOUNTS", "KERNEL_VOLUMES"];

#[derive(Debug, Clone, PartialEq)]
enum VarValue {
    Str(String),
    Yaml(Yaml),
}

#[derive(Debug, Clone, PartialEq)]
struct Var {
    /// The environment variable's name, for messages.
    env_name: String,
    value: VarValue,
}

/// The template's variables: every `KERNEL_*` environment variable under its lower-cased name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateVars {
    vars: BTreeMap<String, Var>,
}

impl TemplateVars {
    /// From the pod's environment ([`super::pod_env`]). `KERNEL_VOLUMES` and
    /// `KERNEL_VOLUME_MOUNTS` are parsed as YAML (JSON is YAML) and must be lists of mappings.
    /// Of two names differing only in case after `KERNEL_`, the last in name order wins.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, TemplateError> {
        let mut vars = BTreeMap::new();
        for (name, value) in env.iter().filter(|(n, _)| n.starts_with("KERNEL_")) {
            let value = if YAML_VARIABLES.contains(&name.as_str()) {
                VarValue::Yaml(parse_list_of_mappings(name, value)?)
            } else {
                VarValue::Str(value.clone())
            };
            vars.insert(
                name.to_lowercase(),
                Var {
                    env_name: name.clone(),
                    value,
                },
            );
        }
        Ok(Self { vars })
    }

    /// A string variable's value.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match &self.vars.get(name)?.value {
            VarValue::Str(s) => Some(s),
            VarValue::Yaml(_) => None,
        }
    }

    /// A parsed (YAML) variable's value.
    pub fn get_yaml(&self, name: &str) -> Option<&Yaml> {
        match &self.vars.get(name)?.value {
            VarValue::Yaml(y) => Some(y),
            VarValue::Str(_) => None,
        }
    }

    /// The variables' (lower-cased) names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    fn context(&self) -> Value {
        let map: BTreeMap<String, Value> = self
            .vars
            .iter()
            .map(|(k, v)| {
                let value = match &v.value {
                    VarValue::Str(s) => Value::from(s.as_str()),
                    VarValue::Yaml(y) => Value::from(minijinja::value::Serde(y)),
                };
                (k.clone(), value)
            })
            .collect();
        Value::from(map)
    }
}

fn parse_list_of_mappings(name: &str, raw: &str) -> Result<Yaml, TemplateError> {
    let err = |detail: String| TemplateError::NotListOfMappings {
        name: name.to_owned(),
        detail,
    };
    let mut value: Yaml = serde_yaml_ng::from_str(raw).map_err(|e| err(e.to_string()))?;
    value.apply_merge().map_err(|e| err(e.to_string()))?;
    let Yaml::Sequence(items) = &value else {
        return Err(err(format!("got {}", yaml_kind(&value))));
    };
    if let Some(i) = items.iter().position(|i| !i.is_mapping()) {
        return Err(err(format!("item {i} is {}", yaml_kind(&items[i]))));
    }
    if has_tag(&value) {
        return Err(err("tagged values are not supported".into()));
    }
    Ok(value)
}

fn yaml_kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

fn has_tag(v: &Yaml) -> bool {
    match v {
        Yaml::Tagged(_) => true,
        Yaml::Sequence(items) => items.iter().any(has_tag),
        Yaml::Mapping(m) => m.iter().any(|(k, v)| has_tag(k) || has_tag(v)),
        _ => false,
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    // Upstream's select_autoescape disables escaping for `.j2` and `.yaml`.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_formatter(|out, _state, value| {
        out.write_str(&python_str(value))
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "write failed"))
    });
    env.add_filter("yaml_safe", yaml_safe);
    env.add_filter("int", jinja_int);
    env
}

/// Python's `str()` of a template value.
fn python_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        _ => python_repr(value),
    }
}

/// Python's `repr()` (for strings inside containers; `str()` for the rest).
fn python_repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) => python::float_repr(f),
            Err(_) => value.to_string(),
        },
        ValueKind::String => python::str_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = value
                .try_iter()
                .map(|it| it.map(|v| python_repr(&v)).collect())
                .unwrap_or_default();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let entries: Vec<String> = value
                .try_iter()
                .map(|keys| {
                    keys.map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        format!("{}: {}", python_repr(&k), python_repr(&v))
                    })
                    .collect()
                })
                .unwrap_or_default();
            format!("{{{}}}", entries.join(", "))
        }
        _ => value.to_string(),
    }
}

fn undefined_error() -> Error {
    Error::new(ErrorKind::UndefinedError, "value is undefined")
}

/// Upstream's `yaml_safe`: strings double-quoted, lists and dicts in flow style with sorted
/// keys, other scalars canonical, all as PyYAML writes them.
fn yaml_safe(value: &Value) -> Result<String, Error> {
    match value.kind() {
        ValueKind::String => Ok(pyyaml::dump_double_quoted(
            value.as_str().unwrap_or_default(),
        )),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            Ok(pyyaml::dump_flow(&node(value)?))
        }
        ValueKind::None | ValueKind::Bool | ValueKind::Number => {
            Ok(pyyaml::dump_scalar(&node(value)?))
        }
        ValueKind::Undefined => Err(undefined_error()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("yaml_safe cannot represent a {kind}"),
        )),
    }
}

fn node(value: &Value) -> Result<Node, Error> {
    Ok(match value.kind() {
        ValueKind::String => Node::Str(value.as_str().unwrap_or_default().to_owned()),
        ValueKind::None => Node::Other("null".into()),
        ValueKind::Bool => Node::Other(if value.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number if value.is_integer() => Node::Other(value.to_string()),
        ValueKind::Number => Node::float(f64::try_from(value.clone())?),
        ValueKind::Seq | ValueKind::Iterable => Node::Seq(
            value
                .try_iter()?
                .map(|v| node(&v))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            // Python sorts str keys by code point and numbers numerically; a mix stays unsorted.
            if keys.iter().all(|k| k.kind() == ValueKind::String) {
                keys.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            } else if keys
                .iter()
                .all(|k| matches!(k.kind(), ValueKind::Number | ValueKind::Bool))
            {
                keys.sort_by(|a, b| {
                    let f = |v: &Value| f64::try_from(v.clone()).unwrap_or(f64::NAN);
                    f(a).total_cmp(&f(b))
                });
            }
            let mut entries = Vec::with_capacity(keys.len());
            for k in keys {
                let v = value.get_item(&k)?;
                entries.push((node(&k)?, node(&v)?));
            }
            Node::Map(entries)
        }
        ValueKind::Undefined => return Err(undefined_error()),
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("yaml_safe cannot represent a {kind}"),
            ));
        }
    })
}

/// Jinja2's `int` filter: `int(value)` (Python's parsing for strings), else `int(float(value))`,
/// else the default (0). An infinite value fails, as Python's `OverflowError` does.
fn jinja_int(value: &Value, default: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let default = match default {
        Some(d) => d,
        None => kwargs
            .get::<Option<Value>>("default")?
            .unwrap_or(Value::from(0)),
    };
    if let Some(base) = kwargs.get::<Option<i64>>("base")?
        && base != 10
    {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "int: only base 10 is supported",
        ));
    }
    kwargs.assert_all_used()?;
    let from_float = |f: f64| -> Result<Value, Error> {
        if f.is_nan() {
            Ok(default.clone())
        } else if f.is_infinite() {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                "cannot convert float infinity to integer",
            ))
        } else {
            let digits = python::float_trunc_decimal(f);
            Ok(digits
                .parse::<i128>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(digits)))
        }
    };
    match value.kind() {
        ValueKind::Undefined => Err(undefined_error()),
        ValueKind::Bool => Ok(Value::from(u8::from(value.is_true()))),
        ValueKind::Number if value.is_integer() => Ok(value.clone()),
        ValueKind::Number => from_float(f64::try_from(value.clone())?),
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            if let Some(i) = PyInt::parse(s) {
                return Ok(i
                    .to_i128()
                    .map(Value::from)
                    .unwrap_or_else(|| Value::from(i.to_string())));
            }
            match python::parse_float(s) {
                Some(f) => from_float(f),
                None => Ok(default),
            }
        }
        _ => Ok(default),
    }
}

/// Renders a kernel-pod template exactly as upstream's launcher does (see the module doc).
pub fn render(template_src: &str, vars: &TemplateVars) -> Result<String, TemplateError> {
    environment()
        .render_str(template_src, vars.context())
        .map_err(|e| TemplateError::Render(render_error_text(&e)))
}

fn render_error_text(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The kinds of object a kernel-pod manifest may hold (at most one each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Secret,
    PersistentVolumeClaim,
    PersistentVolume,
    Service,
    ConfigMap,
}

impl Kind {
    /// Every kind, in no particular order.
    pub const ALL: [Self; 6] = [
        Self::Pod,
        Self::Secret,
        Self::PersistentVolumeClaim,
        Self::PersistentVolume,
        Self::Service,
        Self::ConfigMap,
    ];

    /// The `kind` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::Secret => "Secret",
            Self::PersistentVolumeClaim => "PersistentVolumeClaim",
            Self::PersistentVolume => "PersistentVolume",
            Self::Service => "Service",
            Self::ConfigMap => "ConfigMap",
        }
    }
}

/// One object of the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub kind: Kind,
    pub body: serde_json::Value,
}

fn yaml_documents(text: &str) -> Result<Vec<Yaml>, String> {
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let mut doc = Yaml::deserialize(de).map_err(|e| e.to_string())?;
        doc.apply_merge().map_err(|e| e.to_string())?;
        docs.push(doc);
    }
    Ok(docs)
}

/// Python's truthiness of a loaded document (upstream skips falsy ones).
fn falsy(doc: &Yaml) -> bool {
    match doc {
        Yaml::Null => true,
        Yaml::Bool(b) => !b,
        Yaml::Number(n) => n.as_f64() == Some(0.0),
        Yaml::String(s) => s.is_empty(),
        Yaml::Sequence(s) => s.is_empty(),
        Yaml::Mapping(m) => m.is_empty(),
        Yaml::Tagged(_) => false,
    }
}

/// Parses a rendered manifest: every non-empty document must be a mapping whose `kind` is one
/// of [`Kind`], at most one per kind, and exactly one `Pod`.
pub fn documents(rendered: &str) -> Result<Vec<Document>, TemplateError> {
    let docs = yaml_documents(rendered).map_err(TemplateError::Manifest)?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate().filter(|(_, d)| !falsy(d)) {
        let Yaml::Mapping(map) = doc else {
            return Err(TemplateError::Manifest(format!(
                "document {} is {}, not a mapping",
                i + 1,
                yaml_kind(doc)
            )));
        };
        let kind = match map.get("kind") {
            Some(Yaml::String(k)) => Kind::ALL
                .into_iter()
                .find(|known| known.as_str() == k)
                .ok_or_else(|| TemplateError::UnexpectedKind(k.clone()))?,
            Some(other) => {
                return Err(TemplateError::UnexpectedKind(
                    yaml_scalar_text(other).unwrap_or_else(|| yaml_kind(other).to_owned()),
                ));
            }
            None => return Err(TemplateError::UnexpectedKind("None".into())),
        };
        let body = yaml_to_json(doc).map_err(|e| {
            TemplateError::Manifest(format!("document {} ({}): {e}", i + 1, kind.as_str()))
        })?;
        out.push(Document { kind, body });
    }
    for kind in Kind::ALL {
        let count = out.iter().filter(|d| d.kind == kind).count();
        if count > 1 {
            return Err(TemplateError::TooMany {
                kind: kind.as_str().into(),
                count,
            });
        }
    }
    if !out.iter().any(|d| d.kind == Kind::Pod) {
        return Err(TemplateError::NoPod);
    }
    Ok(out)
}

fn yaml_scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::Null => Some("null".into()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(match n.as_f64() {
            Some(f) if !(n.is_i64() || n.is_u64()) => python::float_repr(f),
            _ => n.to_string(),
        }),
        Yaml::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// What the Kubernetes client sends for a loaded object: scalar keys become strings.
fn yaml_to_json(v: &Yaml) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Yaml::Null => J::Null,
        Yaml::Bool(b) => J::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .ok_or_else(|| format!("{f} is not a JSON number"))?
            }
        }
        Yaml::String(s) => J::String(s.clone()),
        Yaml::Sequence(items) => {
            J::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = yaml_scalar_text(k).ok_or("a mapping key is not a scalar")?;
                out.insert(key, yaml_to_json(v)?);
            }
            J::Object(out)
        }
        Yaml::Tagged(t) => return Err(format!("tagged value {}", t.tag)),
    })
}

/// A rendered, checked manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The rendering (what upstream's launcher would have rendered).
    pub rendered: String,
    pub documents: Vec<Document>,
}

/// Renders, checks the structure against neutral values ([`check_structure`]), and parses.
pub fn render_manifest(template_src: &str, vars: &TemplateVars) -> Result<Manifest, TemplateError> {
    let rendered = render(template_src, vars)?;
    check_structure(template_src, vars, &rendered)?;
    let documents = documents(&rendered)?;
    Ok(Manifest {
        rendered,
        documents,
    })
}

/// Whether a string can be placed anywhere in YAML text without changing its structure: it
/// starts with a letter, digit or `_` and holds only those and `. @ + = / -`. Others are
/// "live" and are checked. The empty string is inert.
fn inert(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        None => true,
        Some(first) => {
            (first.is_ascii_alphanumeric() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || "_.@+=/-".contains(c))
        }
    }
}

fn collect_live(value: &Yaml, out: &mut BTreeSet<String>) {
    match value {
        Yaml::String(s) if !inert(s) => {
            out.insert(s.clone());
        }
        Yaml::Sequence(items) => items.iter().for_each(|i| collect_live(i, out)),
        Yaml::Mapping(m) => {
            for (k, v) in m {
                collect_live(k, out);
                collect_live(v, out);
            }
        }
        _ => {}
    }
}

fn neutralise_yaml(value: &Yaml, placeholders: &BTreeMap<String, String>) -> Yaml {
    match value {
        Yaml::String(s) => Yaml::String(placeholders.get(s).cloned().unwrap_or_else(|| s.clone())),
        Yaml::Sequence(items) => Yaml::Sequence(
            items
                .iter()
                .map(|i| neutralise_yaml(i, placeholders))
                .collect(),
        ),
        Yaml::Mapping(m) => Yaml::Mapping(
            m.iter()
                .map(|(k, v)| {
                    (
                        neutralise_yaml(k, placeholders),
                        neutralise_yaml(v, placeholders),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The structure of a manifest: per document its kind and every node's path, type and size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape(Vec<BTreeSet<(String, char, usize)>>);

fn shape(text: &str, canon: &dyn Fn(&str) -> String) -> Result<Shape, String> {
    fn walk(
        v: &Yaml,
        path: String,
        canon: &dyn Fn(&str) -> String,
        out: &mut BTreeSet<(String, char, usize)>,
    ) {
        match v {
            Yaml::Sequence(items) => {
                out.insert((path.clone(), 's', items.len()));
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{path}/{i}"), canon, out);
                }
            }
            Yaml::Mapping(m) => {
                out.insert((path.clone(), 'm', m.len()));
                for (k, v) in m {
                    let key = yaml_scalar_text(k).unwrap_or_else(|| format!("{k:?}"));
                    walk(v, format!("{path}/{}", canon(&key)), canon, out);
                }
            }
            Yaml::Tagged(t) => walk(&t.value, format!("{path}!{}", t.tag), canon, out),
            _ => {
                out.insert((path, 'v', 0));
            }
        }
    }
    let docs = yaml_documents(text)?;
    Ok(Shape(
        docs.iter()
            .map(|d| {
                let mut paths = BTreeSet::new();
                if let Some(kind) = d.get("kind").and_then(yaml_scalar_text) {
                    paths.insert((format!("kind={}", canon(&kind)), 'k', 0));
                }
                walk(d, String::new(), canon, &mut paths);
                paths
            })
            .collect(),
    ))
}

fn describe_difference(real: &Result<Shape, String>, neutral: &Shape) -> String {
    let real = match real {
        Err(e) => return format!("the rendering is no longer valid YAML: {e}"),
        Ok(r) => r,
    };
    if real.0.len() != neutral.0.len() {
        return format!("{} documents instead of {}", real.0.len(), neutral.0.len());
    }
    for (i, (r, n)) in real.0.iter().zip(&neutral.0).enumerate() {
        if let Some((path, kind, size)) = r.difference(n).next() {
            let what = match kind {
                'm' => format!("a mapping of {size} keys"),
                's' => format!("a list of {size} items"),
                'k' => "a different kind".into(),
                _ => "a value".into(),
            };
            return format!(
                "document {}: {} at '{}'",
                i + 1,
                what,
                if path.is_empty() { "/" } else { path }
            );
        }
        if let Some((path, _, _)) = n.difference(r).next() {
            return format!(
                "document {}: '{}' changed",
                i + 1,
                if path.is_empty() { "/" } else { path }
            );
        }
    }
    "the structure differs".into()
}

/// Checks that the variables' values do not change the manifest's structure, for any template.
///
/// Every string value (top level, or inside `KERNEL_VOLUMES`/`KERNEL_VOLUME_MOUNTS`, keys
/// included) that is not inert — i.e. that holds a character able to alter YAML (newline,
/// quote, `:`, `#`, `-` at the start, braces, brackets, space, ...) — is replaced by a neutral
/// placeholder of its own, and the template is rendered again. Both renderings must parse into
/// the same documents with the same kinds, the same key paths and the same sequence lengths
/// (mapping keys made from a value compare through that value's placeholder). Values rendered
/// through `yaml_safe` always pass; raw `{{ value }}` passes as long as it stays a scalar.
///
/// On a difference, each variable is put back alone into the neutral rendering to find the
/// ones responsible; when only their combination changes the structure, all live variables are
/// named. The renderings of inert values are byte-identical to Jinja2's, so templates compare
/// equal for them by construction. A template that branches on a live value's exact text (or
/// builds keys from it through filters) may be refused although harmless.
pub fn check_structure(
    template_src: &str,
    vars: &TemplateVars,
    rendered: &str,
) -> Result<(), TemplateError> {
    let mut live_by_var: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, var) in &vars.vars {
        let mut live = BTreeSet::new();
        match &var.value {
            VarValue::Str(s) if !inert(s) => {
                live.insert(s.clone());
            }
            VarValue::Str(_) => {}
            VarValue::Yaml(y) => collect_live(y, &mut live),
        }
        if !live.is_empty() {
            live_by_var.insert(name, live);
        }
    }
    if live_by_var.is_empty() {
        return Ok(());
    }
    let all_live: BTreeSet<&String> = live_by_var.values().flatten().collect();
    let placeholders: BTreeMap<String, String> = all_live
        .iter()
        .enumerate()
        .map(|(i, s)| ((*s).clone(), format!("kvph{i}x")))
        .collect();
    let mut by_length: Vec<(&String, &String)> = placeholders.iter().collect();
    by_length.sort_by_key(|(s, _)| std::cmp::Reverse(s.chars().count()));
    let canon = |key: &str| {
        let mut key = key.to_owned();
        for (live, placeholder) in &by_length {
            if key.contains(live.as_str()) {
                key = key.replace(live.as_str(), placeholder);
            }
        }
        key
    };
    let neutral_vars = |keep: Option<&str>| TemplateVars {
        vars: vars
            .vars
            .iter()
            .map(|(name, var)| {
                let value = if Some(name.as_str()) == keep {
                    var.value.clone()
                } else {
                    match &var.value {
                        VarValue::Str(s) => {
                            VarValue::Str(placeholders.get(s).cloned().unwrap_or_else(|| s.clone()))
                        }
                        VarValue::Yaml(y) => VarValue::Yaml(neutralise_yaml(y, &placeholders)),
                    }
                };
                (
                    name.clone(),
                    Var {
                        env_name: var.env_name.clone(),
                        value,
                    },
                )
            })
            .collect(),
    };
    let env_names = |names: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        names.map(|n| vars.vars[n].env_name.clone()).collect()
    };
    let all_names = || env_names(&mut live_by_var.keys().copied());
    let neutral = render(template_src, &neutral_vars(None))
        .and_then(|text| shape(&text, &canon).map_err(TemplateError::Manifest));
    let neutral = match neutral {
        Ok(s) => s,
        Err(e) => {
            return Err(TemplateError::Injection {
                variables: all_names(),
                detail: format!("the template fails with neutral values in their place: {e}"),
            });
        }
    };
    let real = shape(rendered, &canon);
    if real.as_ref() == Ok(&neutral) {
        return Ok(());
    }
    let detail = describe_difference(&real, &neutral);
    let culprits: Vec<&str> = live_by_var
        .keys()
        .copied()
        .filter(|name| {
            let alone = render(template_src, &neutral_vars(Some(name)))
                .ok()
                .and_then(|text| shape(&text, &canon).ok());
            alone.as_ref() != Some(&neutral)
        })
        .collect();
    let variables = if culprits.is_empty() {
        all_names()
    } else {
        env_names(&mut culprits.into_iter())
    };
    Err(TemplateError::Injection { variables, detail })
}

#[cfg(test)]
mod tests;
