//! Validation of `KIP_*` / `EG_*` settings that reports every invalid variable at once.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
