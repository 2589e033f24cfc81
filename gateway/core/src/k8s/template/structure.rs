//! The structure guard of [`render_manifest`](super::render_manifest): variables rendered once
//! as given and once as inert placeholders must give manifests of the same shape.

use super::*;

/// Whether a string can be placed anywhere in YAML text without changing its structure: it
/// starts with a letter, digit or `_` and holds only those and `. @ + = / -`. Others are
/// "live" and are checked. The empty string is inert.
pub(super) fn inert(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        None => true,
        Some(first) => {
            (first.is_ascii_alphanumeric() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || "_.@+=/-".contains(c))
        }
    }
}

pub(super) fn collect_live(value: &Yaml, out: &mut BTreeSet<String>) {
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

pub(super) fn neutralise_yaml(value: &Yaml, placeholders: &BTreeMap<String, String>) -> Yaml {
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
pub(super) struct Shape(Vec<BTreeSet<(String, char, usize)>>);

pub(super) fn shape(text: &str, canon: &dyn Fn(&str) -> String) -> Result<Shape, String> {
    pub(super) fn walk(
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

pub(super) fn describe_difference(real: &Result<Shape, String>, neutral: &Shape) -> String {
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
