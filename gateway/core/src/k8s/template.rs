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

mod jinja;
mod structure;

use self::jinja::environment;
pub use self::structure::check_structure;

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
{% for section, wanted, cpu, memory, gpu in [
     ("requests", has_requests, kernel_cpus, kernel_memory, kernel_gpus),
     ("limits", has_limits, kernel_cpus_limit, kernel_memory_limit, kernel_gpus_limit)]
   if wanted %}
      {{ section }}:
{% for key, quantity in [("cpu", cpu), ("memory", memory), ("nvidia.com/gpu", gpu)]
   if quantity is defined %}
        {{ key }}: {{ quantity | yaml_safe }}
{% endfor %}
{% endfor %}
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

#[cfg(test)]
mod tests;
