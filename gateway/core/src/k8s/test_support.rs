//! Helpers shared by the tests of the Kubernetes modules.

use std::collections::BTreeMap;

/// Variable names and values.
pub(crate) type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// An environment of the given variables.
pub(crate) fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
