//! What `POST /api/kernels` decides before anything is launched, as Enterprise Gateway 3.3 does:
//! the kernel's environment, the user, the limits, the kernel id; and port ranges.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Longest value a client may give an environment variable.
pub const MAX_ENV_VALUE_LEN: usize = 4096;

/// Variables never handed to a kernel.
pub const WITHHELD: [&str; 3] = ["EG_AUTH_TOKEN", "KG_AUTH_TOKEN", "PYTHONEXECUTABLE"];

/// Which request variables besides `KERNEL_*` a client may set (`EG_CLIENT_ENVS`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientEnvs {
    /// Exactly `*`: every variable.
    All,
    Only(Vec<String>),
    #[default]
    None,
}

impl ClientEnvs {
    /// Upstream's comma list: `*` alone allows all; empties are dropped.
    pub fn parse(raw: &str) -> Self {
        let names: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        match names.as_slice() {
            [] => Self::None,
            [star] if star == "*" => Self::All,
            _ => Self::Only(names),
        }
    }

    fn allows(&self, name: &str) -> bool {
        name.starts_with("KERNEL_")
            || match self {
                Self::All => true,
                Self::Only(names) => names.iter().any(|n| n == name),
                Self::None => false,
            }
    }
}

/// A 4xx/5xx answer decided by policy: the status and the message clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    /// Upstream puts process-proxy refusals in `reason` (with an empty `message`).
    pub in_reason: bool,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            in_reason: false,
        }
    }

    fn reason(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            in_reason: true,
        }
    }
}

/// The environment a request asks for, filtered: the gateway's inherited variables, then the
/// client's allowed ones (every `KERNEL_*`, plus `EG_CLIENT_ENVS`).
///
/// `request_env` is the body's `env` (`None` when the body has no `env` key: the kernel then
/// inherits the gateway's whole environment, less the tokens). `gateway_env` is the gateway's own
/// environment.
pub fn kernel_env(
    request_env: Option<&Value>,
    client_envs: &ClientEnvs,
    inherited: &[String],
    gateway_env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Refusal> {
    let Some(request_env) = request_env else {
        let mut env = gateway_env.clone();
        for name in WITHHELD {
            env.remove(name);
        }
        return Ok(env);
    };
    let Value::Object(request) = request_env else {
        return Err(Refusal::new(400, "env must be a JSON object"));
    };
    let mut env: BTreeMap<String, String> = inherited
        .iter()
        .filter_map(|name| Some((name.clone(), gateway_env.get(name)?.clone())))
        .collect();
    for (name, value) in request {
        if !client_envs.allows(name) {
            continue;
        }
        env.insert(name.clone(), checked_value(name, value)?);
    }
    for name in WITHHELD {
        env.remove(name);
    }
    Ok(env)
}

fn checked_value(name: &str, value: &Value) -> Result<String, Refusal> {
    let Value::String(value) = value else {
        return Err(Refusal::new(
            400,
            format!("Environment variable '{name}' value must be a string"),
        ));
    };
    if value.chars().count() > MAX_ENV_VALUE_LEN {
        return Err(Refusal::new(
            400,
            format!("Environment variable '{name}' exceeds maximum length"),
        ));
    }
    if value.contains(['$', '`', '\n', '\r', '\0']) {
        return Err(Refusal::new(
            400,
            format!("Environment variable '{name}' contains prohibited characters"),
        ));
    }
    Ok(value.clone())
}

/// Python's `string.Template(s).safe_substitute(vars)`: `$name` and `${name}` are replaced when
/// known, `$$` is `$`, anything else stays as written.
pub fn fill_template(s: &str, vars: &BTreeMap<String, String>) -> String {
    let ident_len = |t: &str| {
        let mut chars = t.char_indices();
        match chars.next() {
            Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => chars
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map(|(i, _)| i)
                .unwrap_or(t.len()),
            _ => 0,
        }
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        if let Some(braced) = after.strip_prefix('{') {
            let n = ident_len(braced);
            if n > 0
                && braced[n..].starts_with('}')
                && let Some(v) = vars.get(&braced[..n])
            {
                out.push_str(v);
                rest = &braced[n + 1..];
                continue;
            }
        } else {
            let n = ident_len(after);
            if n > 0
                && let Some(v) = vars.get(&after[..n])
            {
                out.push_str(v);
                rest = &after[n..];
                continue;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The user a request is for: `KERNEL_USERNAME`, else the gateway's own user.
pub fn username(env: &BTreeMap<String, String>, gateway_user: &str) -> String {
    env.get("KERNEL_USERNAME")
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| gateway_user.to_owned())
}

fn comma_list(raw: Option<&Value>) -> Option<Vec<String>> {
    match raw? {
        Value::String(s) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

/// Launch authorization (exact names, unlike the listing's filter): the user is refused when in
/// the global or the spec's `unauthorized_users`, or when an authorized list applies (the spec's
/// `authorized_users`, else the global one) and does not name them.
pub fn authorize(
    user: &str,
    display_name: &str,
    spec_config: Option<&Map<String, Value>>,
    authorized: &[String],
    unauthorized: &[String],
) -> Result<(), Refusal> {
    let refuse = || {
        Refusal::reason(
            403,
            format!(
                "User '{user}' is not authorized to start kernel '{display_name}'. Ensure \
                 KERNEL_USERNAME is set to an appropriate value and retry the request."
            ),
        )
    };
    let spec_unauthorized =
        comma_list(spec_config.and_then(|c| c.get("unauthorized_users"))).unwrap_or_default();
    if unauthorized
        .iter()
        .chain(&spec_unauthorized)
        .any(|u| u == user)
    {
        return Err(refuse());
    }
    let allowed =
        comma_list(spec_config.and_then(|c| c.get("authorized_users"))).unwrap_or_else(|| {
            authorized
                .iter()
                .filter(|u| !u.is_empty())
                .cloned()
                .collect()
        });
    if !allowed.is_empty() && !allowed.iter().any(|u| u == user) {
        return Err(refuse());
    }
    Ok(())
}

/// `EG_MAX_KERNELS` and `EG_MAX_KERNELS_PER_USER` over running and pending kernels.
pub fn check_limits(
    max_kernels: Option<usize>,
    max_per_user: Option<usize>,
    active_and_pending: usize,
    user: &str,
    users_kernels: usize,
) -> Result<(), Refusal> {
    if let Some(max) = max_kernels
        && active_and_pending >= max
    {
        return Err(Refusal::new(
            403,
            format!(
                "A max kernels limit has been set to {max} and there are currently \
                 {active_and_pending} active and pending kernels."
            ),
        ));
    }
    if let Some(max) = max_per_user
        && users_kernels >= max
    {
        return Err(Refusal::new(
            403,
            format!(
                "A max kernels per user limit has been set to {max} and user '{user}' currently \
                 has {users_kernels} active and pending kernel(s)."
            ),
        ));
    }
    Ok(())
}

/// A client's `KERNEL_ID`: a canonical lower-case UUID version 4.
pub fn valid_kernel_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// `lo..hi`: kernel ports. `0..0` (or any empty range) lets the system pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: Self = Self { lo: 0, hi: 0 };

    pub fn is_any(self) -> bool {
        self.hi == self.lo
    }

    /// Upstream's rules: `hi - lo` of 0 disables; otherwise at least `min_size` wide, both ends
    /// in 1024..=65535.
    pub fn parse(raw: &str, min_size: u32) -> Result<Self, String> {
        let (lo, hi) = raw
            .trim()
            .split_once("..")
            .ok_or_else(|| format!("port range {raw:?}: expected LOWER..UPPER"))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("port range {raw:?}: {s:?} is not a port number"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if hi == lo {
            return Ok(Self::ANY);
        }
        if !(1024..=65535).contains(&lo) || !(1024..=65535).contains(&hi) || hi < lo {
            return Err(format!(
                "port range {raw:?}: both ends must be within 1024..65535, lower first"
            ));
        }
        if hi - lo < min_size {
            return Err(format!(
                "port range {raw:?}: must span at least {min_size} ports"
            ));
        }
        Ok(Self {
            lo: lo as u16,
            hi: hi as u16,
        })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.lo, self.hi)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn gw() -> BTreeMap<String, String> {
        [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("EG_AUTH_TOKEN", "secret"),
            ("KG_AUTH_TOKEN", "secret"),
            ("LANG", "C"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn env_filtering_table() {
        let inherited = vec!["PATH".to_owned(), "MISSING".to_owned()];
        let request = json!({"KERNEL_USERNAME": "alice", "FOO": "1", "BAR": "2",
                             "EG_AUTH_TOKEN": "x"});
        let cases = [
            (ClientEnvs::None, vec!["KERNEL_USERNAME", "PATH"]),
            (
                ClientEnvs::parse("FOO, ,"),
                vec!["FOO", "KERNEL_USERNAME", "PATH"],
            ),
            (
                ClientEnvs::parse("*"),
                vec!["BAR", "FOO", "KERNEL_USERNAME", "PATH"],
            ),
        ];
        for (client, expected) in cases {
            let env = kernel_env(Some(&request), &client, &inherited, &gw()).unwrap();
            assert_eq!(env.keys().collect::<Vec<_>>(), expected, "{client:?}");
        }
        // No env key at all: the gateway's environment, less the tokens.
        let env = kernel_env(None, &ClientEnvs::None, &inherited, &gw()).unwrap();
        assert_eq!(env.keys().collect::<Vec<_>>(), vec!["HOME", "LANG", "PATH"]);
    }

    #[test]
    fn env_value_checks_name_the_variable() {
        let long = "x".repeat(MAX_ENV_VALUE_LEN + 1);
        for (value, expect) in [
            (
                json!(5),
                "Environment variable 'KERNEL_X' value must be a string",
            ),
            (json!(long), "exceeds maximum length"),
            (json!("a$b"), "contains prohibited characters"),
            (json!("a`b`"), "contains prohibited characters"),
            (json!("a\nb"), "contains prohibited characters"),
            (json!("a\rb"), "contains prohibited characters"),
            (json!("a\u{0}b"), "contains prohibited characters"),
        ] {
            let err = kernel_env(
                Some(&json!({ "KERNEL_X": value })),
                &ClientEnvs::None,
                &[],
                &gw(),
            )
            .unwrap_err();
            assert_eq!(err.status, 400);
            assert!(err.message.contains(expect), "{}", err.message);
            assert!(err.message.contains("KERNEL_X"));
        }
        // Dropped names are not checked.
        assert!(kernel_env(Some(&json!({"OTHER": 5})), &ClientEnvs::None, &[], &gw()).is_ok());
        assert!(
            kernel_env(
                Some(&json!({"KERNEL_X": "x".repeat(MAX_ENV_VALUE_LEN)})),
                &ClientEnvs::None,
                &[],
                &gw()
            )
            .is_ok()
        );
        assert_eq!(
            kernel_env(Some(&json!([1])), &ClientEnvs::None, &[], &gw())
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn template_like_pythons_safe_substitute() {
        let vars: BTreeMap<String, String> = [("KERNEL_USERNAME", "alice"), ("X", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (input, expected) in [
            ("${KERNEL_USERNAME}", "alice"),
            ("$KERNEL_USERNAME/x", "alice/x"),
            ("${KERNEL_ID}", "${KERNEL_ID}"),
            ("${KERNEL_ID:-x}", "${KERNEL_ID:-x}"),
            ("$$X", "$X"),
            ("$X$X", "11"),
            ("$", "$"),
            ("a$ b", "a$ b"),
            ("${X", "${X"),
            ("$1", "$1"),
            ("--conf a=${X} b=$Xy", "--conf a=1 b=$Xy"),
        ] {
            assert_eq!(fill_template(input, &vars), expected, "{input}");
        }
    }

    #[test]
    fn authorization_table() {
        let spec = |v: Value| v.as_object().cloned();
        let none: Vec<String> = vec![];
        let root = vec!["root".to_owned()];
        type Case<'a> = (&'a str, Option<Map<String, Value>>, Vec<String>, bool);
        let cases: Vec<Case<'_>> = vec![
            ("alice", None, none.clone(), true),
            ("root", None, none.clone(), false),
            (
                "bob",
                spec(json!({"unauthorized_users": "bobby,eve"})),
                none.clone(),
                true,
            ),
            (
                "eve",
                spec(json!({"unauthorized_users": "bobby, eve"})),
                none.clone(),
                false,
            ),
            (
                "carol",
                spec(json!({"authorized_users": "alice,carol"})),
                vec!["x".into()],
                true,
            ),
            (
                "dave",
                spec(json!({"authorized_users": "alice,carol"})),
                none.clone(),
                false,
            ),
            ("dave", None, vec!["alice".into()], false),
            ("alice", None, vec!["alice".into()], true),
        ];
        for (user, config, authorized, ok) in cases {
            let r = authorize(user, "Python", config.as_ref(), &authorized, &root);
            assert_eq!(r.is_ok(), ok, "{user} {config:?}");
            if let Err(e) = r {
                assert_eq!(e.status, 403);
                assert!(e.in_reason);
                assert!(e.message.starts_with(&format!(
                    "User '{user}' is not authorized to start kernel 'Python'"
                )));
            }
        }
    }

    #[test]
    fn limits_table() {
        assert!(check_limits(None, None, 100, "a", 100).is_ok());
        assert!(check_limits(Some(2), None, 1, "a", 1).is_ok());
        let e = check_limits(Some(2), None, 2, "a", 0).unwrap_err();
        assert_eq!(
            e.message,
            "A max kernels limit has been set to 2 and there are currently 2 active and pending kernels."
        );
        let e = check_limits(None, Some(1), 5, "bob", 1).unwrap_err();
        assert_eq!(
            e.message,
            "A max kernels per user limit has been set to 1 and user 'bob' currently has 1 active and pending kernel(s)."
        );
    }

    #[test]
    fn kernel_ids() {
        assert!(valid_kernel_id("6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"));
        for bad in [
            "6F1C2D3E-4B5A-4C6D-8E7F-9A0B1C2D3E4F",
            "6f1c2d3e-4b5a-1c6d-8e7f-9a0b1c2d3e4f",
            "6f1c2d3e-4b5a-4c6d-7e7f-9a0b1c2d3e4f",
            "6f1c2d3e4b5a4c6d8e7f9a0b1c2d3e4f",
            "1-2-3-4-5",
            "",
        ] {
            assert!(!valid_kernel_id(bad), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(PortRange::parse("0..0", 1000), Ok(PortRange::ANY));
        assert_eq!(
            PortRange::parse("40000..41000", 1000),
            Ok(PortRange {
                lo: 40000,
                hi: 41000
            })
        );
        for bad in [
            "40000..40500",
            "80..2000",
            "1",
            "a..b",
            "50000..40000",
            "1024..70000",
        ] {
            assert!(PortRange::parse(bad, 1000).is_err(), "{bad}");
        }
    }
}
