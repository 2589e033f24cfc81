//! CombinedImagesFetcher: the union of several sources, robust to any one failing.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::future::join_all;
use tracing::warn;

use super::{FetchError, Fetched, ImageSource};
use crate::plan::Candidate;

/// Unites the lists of its sources. A source that fails, or answers "not modified", contributes
/// the last list it gave; the union fails only when no source has ever answered.
pub struct CombinedSource {
    sources: Vec<Arc<dyn ImageSource>>,
    last: Mutex<Vec<Option<Vec<Candidate>>>>,
}

impl CombinedSource {
    pub fn new(sources: Vec<Arc<dyn ImageSource>>) -> Self {
        let last = Mutex::new(vec![None; sources.len()]);
        Self { sources, last }
    }
}

#[async_trait]
impl ImageSource for CombinedSource {
    fn name(&self) -> &'static str {
        "CombinedImagesFetcher"
    }

    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let results = join_all(self.sources.iter().map(|s| s.fetch())).await;
        let mut last = self.last.lock().expect("combined lock");
        let mut changed = false;
        let mut failures = Vec::new();
        for ((source, result), slot) in self.sources.iter().zip(results).zip(last.iter_mut()) {
            match result {
                Ok(Fetched::Images(images)) => {
                    changed |= slot.as_ref() != Some(&images);
                    *slot = Some(images);
                }
                Ok(Fetched::NotModified) => {}
                Err(error) => {
                    warn!(fetcher = source.name(), %error, kept_previous = slot.is_some(), "image source failed");
                    failures.push(format!("{}: {error}", source.name()));
                }
            }
        }
        if last.iter().all(Option::is_none) {
            return Err(FetchError::AllFailed(failures.join("; ")));
        }
        if !changed {
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Images(
            last.iter().flatten().flatten().cloned().collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{ScriptedSource, images};

    fn names(f: Fetched) -> Vec<String> {
        match f {
            Fetched::Images(c) => c.into_iter().map(|c| c.image).collect(),
            Fetched::NotModified => vec!["<not modified>".into()],
        }
    }

    #[tokio::test]
    async fn one_failing_source_keeps_the_others() {
        let gateway = ScriptedSource::new(vec![
            None,
            Some(images(&["k:1"])),
            None,
            Some(Fetched::NotModified),
        ]);
        let list = ScriptedSource::new(vec![
            Some(images(&["s:1"])),
            Some(images(&["s:1"])),
            Some(images(&["s:2"])),
        ]);
        let c = CombinedSource::new(vec![gateway, list]);
        // gateway down: the static list still counts
        assert_eq!(names(c.fetch().await.unwrap()), vec!["s:1"]);
        // gateway up
        assert_eq!(names(c.fetch().await.unwrap()), vec!["k:1", "s:1"]);
        // gateway down again: its last list is kept
        assert_eq!(names(c.fetch().await.unwrap()), vec!["k:1", "s:2"]);
        // nothing changed
        assert_eq!(names(c.fetch().await.unwrap()), vec!["<not modified>"]);
    }

    #[tokio::test]
    async fn all_failing_is_an_error() {
        let c = CombinedSource::new(vec![
            ScriptedSource::new(vec![None]),
            ScriptedSource::new(vec![None]),
        ]);
        let err = c.fetch().await.unwrap_err().to_string();
        assert!(err.starts_with("every source failed"), "{err}");
    }
}
