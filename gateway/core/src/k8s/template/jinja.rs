//! The Jinja environment of kernel-pod templates: upstream's syntax settings, Python's printing
//! of values, and the `yaml_safe` and `int` filters.

use super::*;

pub(super) fn environment() -> Environment<'static> {
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
pub(super) fn python_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        _ => python_repr(value),
    }
}

/// Python's `repr()` (for strings inside containers; `str()` for the rest).
pub(super) fn python_repr(value: &Value) -> String {
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

pub(super) fn undefined_error() -> Error {
    Error::new(ErrorKind::UndefinedError, "value is undefined")
}

/// Upstream's `yaml_safe`: strings double-quoted, lists and dicts in flow style with sorted
/// keys, other scalars canonical, all as PyYAML writes them.
pub(super) fn yaml_safe(value: &Value) -> Result<String, Error> {
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

pub(super) fn node(value: &Value) -> Result<Node, Error> {
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
pub(super) fn jinja_int(
    value: &Value,
    default: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
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
