//! Validation of `KIP_*` / `EG_*` settings that reports every invalid variable at once, and the
//! parsers both binaries use for the settings they share (log level, admin address, seconds,
//! secrets).

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use tracing::level_filters::LevelFilter;

/// One invalid variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub problem: String,
}

/// Every invalid variable found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {}={:?}: {}", e.var, e.value, e.problem)?;
        }
        Ok(())
    }
}

/// One setting as the command line gave it: the variable it is read from (which its errors name)
/// and its raw text, from the `--flag`, the variable or the default. [`settings!`] declares the
/// clap arguments that produce them.
///
/// [`settings!`]: crate::settings
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub var: &'static str,
    pub raw: String,
}

impl Setting {
    pub fn new(var: &'static str, raw: impl Into<String>) -> Self {
        Self {
            var,
            raw: raw.into(),
        }
    }

    /// `setting`, or else the fallback variable `var` when `env` has it (e.g. a `KG_*` twin).
    pub fn or_env(
        setting: Option<Self>,
        var: &'static str,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Option<Self> {
        setting.or_else(|| env(var).map(|raw| Self::new(var, raw)))
    }
}

/// Declares a clap argument struct of [`Setting`]s: each field is a `--flag` (the field's name in
/// kebab case) with its environment variable twin, written `field: "VAR" default "value",`, or
/// `field: "VAR",` for a setting that may be unset (an `Option<Setting>`). Doc comments are the
/// help text; further `#[arg(..)]` attributes are kept. Fields written `pub name: Type,` are
/// passed through as they are (flags without a variable, `#[command(flatten)]` groups).
///
/// The struct's `#[derive(clap::Parser)]` or `#[derive(clap::Args)]` is the caller's, and so is
/// the dependency on `clap` the expansion names.
#[macro_export]
macro_rules! settings {
    (@field $head:tt [$($out:tt)*]
        $(#[$($meta:tt)*])* pub $field:ident: $ty:ty, $($rest:tt)*
    ) => {
        $crate::settings!(@field $head [$($out)* $(#[$($meta)*])* pub $field: $ty,] $($rest)*);
    };
    (@field $head:tt [$($out:tt)*]
        $(#[$($meta:tt)*])* $field:ident: $var:literal default $default:literal, $($rest:tt)*
    ) => {
        $crate::settings!(@field $head [$($out)*
            $(#[$($meta)*])*
            #[arg(
                long,
                env = $var,
                default_value = $default,
                value_parser = $crate::settings!(@parser $var),
            )]
            pub $field: $crate::config::Setting,
        ] $($rest)*);
    };
    (@field $head:tt [$($out:tt)*]
        $(#[$($meta:tt)*])* $field:ident: $var:literal, $($rest:tt)*
    ) => {
        $crate::settings!(@field $head [$($out)*
            $(#[$($meta)*])*
            #[arg(long, env = $var, value_parser = $crate::settings!(@parser $var))]
            pub $field: Option<$crate::config::Setting>,
        ] $($rest)*);
    };
    (@field [$(#[$($attr:tt)*])* $vis:vis struct $name:ident] [$($out:tt)*]) => {
        $(#[$($attr)*])*
        $vis struct $name { $($out)* }
    };
    (@parser $var:literal) => {
        ::clap::builder::TypedValueParser::map(
            ::clap::builder::StringValueParser::new(),
            |raw| $crate::config::Setting::new($var, raw),
        )
    };
    (
        $(#[$($attr:tt)*])*
        $vis:vis struct $name:ident { $($fields:tt)* }
    ) => {
        $crate::settings!(@field [$(#[$($attr)*])* $vis struct $name] [] $($fields)*);
    };
}

/// Collects errors while each field is validated.
#[derive(Debug, Default)]
pub struct Checker(pub Vec<ConfigError>);

impl Checker {
    /// The parsed value, or `None` with the problem recorded against `var`.
    pub fn check<T>(&mut self, var: &'static str, value: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|problem| {
            self.0.push(ConfigError {
                var,
                value: value.to_owned(),
                problem,
            })
        })
        .ok()
    }
}

impl Checker {
    /// `raw` parsed by `parse`, or `None` with the problem recorded against `var`.
    pub fn parse<T>(
        &mut self,
        var: &'static str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.check(var, raw, parse(raw))
    }

    /// An optional setting: `Some(None)` when `raw` is unset or blank, else `raw` parsed by
    /// `parse` (as `Some(Some(_))`), or `None` with the problem recorded against `var`.
    pub fn parse_set<T>(
        &mut self,
        var: &'static str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match raw {
            Some(raw) if !raw.trim().is_empty() => self.parse(var, raw, parse).map(Some),
            _ => Some(None),
        }
    }

    /// `setting` parsed by `parse`, or `None` with the problem recorded against its variable.
    pub fn read<T>(
        &mut self,
        setting: &Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.parse(setting.var, &setting.raw, parse)
    }

    /// An optional setting: `Some(None)` when it is unset or blank, else parsed as by
    /// [`Checker::read`] (as `Some(Some(_))`), or `None` with the problem recorded.
    pub fn read_set<T>(
        &mut self,
        setting: Option<&Setting>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match setting {
            Some(s) => self.parse_set(s.var, Some(&s.raw), parse),
            None => Some(None),
        }
    }

    /// Every problem recorded, or `Ok(())` when there is none.
    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// An unset or empty value is no secret.
    pub fn non_empty(s: Option<String>) -> Option<Self> {
        s.filter(|s| !s.is_empty()).map(Self)
    }

    /// The secret value, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A log level as upstream's Python processes take it: DEBUG, INFO, WARNING (or WARN), ERROR,
/// CRITICAL in any case, Python's numbers (10, 20, 30, 40, 50), and TRACE.
pub fn parse_log_level(raw: &str) -> Result<LevelFilter, String> {
    match raw.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Ok(LevelFilter::TRACE),
        "DEBUG" | "10" => Ok(LevelFilter::DEBUG),
        "INFO" | "20" => Ok(LevelFilter::INFO),
        "WARNING" | "WARN" | "30" => Ok(LevelFilter::WARN),
        "ERROR" | "CRITICAL" | "40" | "50" => Ok(LevelFilter::ERROR),
        _ => Err("expected DEBUG, INFO, WARNING, ERROR or CRITICAL (or 10…50)".to_owned()),
    }
}

/// The admin endpoint's address: `IP:PORT`, or `off` (or empty) for none.
pub fn parse_admin_addr(raw: &str) -> Result<Option<SocketAddr>, String> {
    match raw.trim() {
        "off" | "" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|_| "expected IP:PORT (e.g. 0.0.0.0:9090) or off".to_owned()),
    }
}

/// A boolean as both binaries' upstreams take them: true/false (any case), 1/0, yes/no, on/off;
/// empty is false.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// A whole number of seconds; 0 only where `zero_ok`.
pub fn parse_seconds(raw: &str, zero_ok: bool) -> Result<Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(0) if !zero_ok => Err("expected a positive number of seconds".to_owned()),
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => Err("expected a whole number of seconds".to_owned()),
    }
}

/// `raw`, trimmed, as a `T`; otherwise the problem is `expected {expected}`.
pub fn parse_trimmed<T: FromStr>(raw: &str, expected: &str) -> Result<T, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("expected {expected}"))
}

/// A whole number (of the range of `T`).
pub fn parse_whole<T: FromStr>(raw: &str) -> Result<T, String> {
    parse_trimmed(raw, "a whole number")
}

/// A whole number greater than 0.
pub fn parse_positive(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number greater than 0".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_one_grammar() {
        let table = [
            (&["DEBUG", "debug", "10"][..], LevelFilter::DEBUG),
            (&["Info", " 20 "], LevelFilter::INFO),
            (&["WARNING", "warn", "30"], LevelFilter::WARN),
            (&["ERROR", "40", "critical", "50"], LevelFilter::ERROR),
            (&["trace"], LevelFilter::TRACE),
        ];
        for (inputs, want) in table {
            for input in inputs {
                assert_eq!(parse_log_level(input), Ok(want), "{input}");
            }
        }
        for bad in ["LOUD", "15", "", "0"] {
            assert!(parse_log_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_addr_seconds_and_secrets() {
        assert_eq!(parse_admin_addr("off"), Ok(None));
        assert_eq!(parse_admin_addr(" "), Ok(None));
        assert_eq!(
            parse_admin_addr("127.0.0.1:9090"),
            Ok(Some("127.0.0.1:9090".parse().unwrap()))
        );
        assert!(parse_admin_addr("localhost").is_err());
        assert_eq!(parse_seconds("0", true), Ok(Duration::ZERO));
        assert!(parse_seconds("0", false).is_err());
        assert!(parse_seconds("-1", true).is_err());
        assert_eq!(parse_positive(" 3 "), Ok(3));
        assert!(parse_positive("0").is_err());
        assert_eq!(Secret::non_empty(Some(String::new())), None);
        let secret = Secret::non_empty(Some("s3cret".into())).unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert!(!format!("{secret:?}").contains("s3cret"));
        let mut c = Checker::default();
        assert_eq!(c.parse("A", " 7 ", parse_positive), Some(7));
        assert!(c.0.is_empty());
        assert_eq!(c.parse_set("A", None, parse_positive), Some(None));
        assert_eq!(c.parse_set("A", Some("  "), parse_positive), Some(None));
        assert_eq!(c.parse_set("A", Some("2"), parse_positive), Some(Some(2)));
        assert!(c.0.is_empty());
        assert_eq!(c.parse_set("B", Some("0"), parse_positive), None);
        assert_eq!(c.0[0].var, "B");
        assert_eq!(parse_trimmed::<u16>(" 80 ", "a port"), Ok(80));
        assert_eq!(
            parse_trimmed::<u16>("70000", "a port"),
            Err("expected a port".to_owned())
        );
        c.check::<u8>("A", "x", Err("bad".into()));
        assert!(c.finish().is_err());
        assert!(Checker::default().finish().is_ok());
    }

    #[test]
    fn settings_are_checked_against_their_own_variable() {
        let mut c = Checker::default();
        let port = Setting::new("PORT", " 80 ");
        assert_eq!(c.read(&port, parse_whole::<u16>), Some(80));
        let unset: Option<&Setting> = None;
        let blank = Setting::new("OPT", "  ");
        let two = Setting::new("OPT", "2");
        for (setting, want) in [
            (unset, Some(None)),
            (Some(&blank), Some(None)),
            (Some(&two), Some(Some(2))),
        ] {
            assert_eq!(c.read_set(setting, parse_positive), want, "{setting:?}");
        }
        assert!(c.0.is_empty());
        assert_eq!(
            c.read(&Setting::new("PORT", "70000"), parse_whole::<u16>),
            None
        );
        assert_eq!(
            c.read_set(Some(&Setting::new("OPT", "0")), parse_positive),
            None
        );
        let recorded: Vec<_> =
            c.0.iter()
                .map(|e| (e.var, e.value.as_str(), e.problem.as_str()))
                .collect();
        assert_eq!(
            recorded,
            [
                ("PORT", "70000", "expected a whole number"),
                ("OPT", "0", "expected a whole number greater than 0"),
            ]
        );
    }

    #[test]
    fn a_fallback_variable_is_read_only_for_an_unset_setting() {
        let env = |var: &str| (var == "KG_X").then(|| "from-kg".to_owned());
        let given = Some(Setting::new("EG_X", "given"));
        let table = [
            (given.clone(), "KG_X", Some(Setting::new("EG_X", "given"))),
            (None, "KG_X", Some(Setting::new("KG_X", "from-kg"))),
            (None, "KG_Y", None),
        ];
        for (setting, fallback, want) in table {
            assert_eq!(Setting::or_env(setting, fallback, env), want, "{fallback}");
        }
    }

    #[test]
    fn every_problem_is_listed_with_its_variable() {
        let mut c = Checker::default();
        assert_eq!(c.check("A", "1", Ok::<_, String>(1)), Some(1));
        assert_eq!(c.check::<u8>("B", "x", Err("not a number".into())), None);
        assert_eq!(c.check::<u8>("C", "", Err("empty".into())), None);
        assert_eq!(
            ConfigErrors(c.0).to_string(),
            "invalid configuration (2 problem(s)):\n  B=\"x\": not a number\n  C=\"\": empty"
        );
    }
}
