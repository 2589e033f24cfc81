//! Test doubles the unit tests share: a scripted image source and a scripted runtime.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use eg_common::ImageRef;

use crate::{
    plan::Candidate,
    ports::{ErrorKind, ImageRuntime, PullOutcome, RuntimeError},
    source::{FetchError, Fetched, ImageSource},
};

/// A list of images as a source reads it (origin `test list`).
pub(crate) fn images(names: &[&str]) -> Fetched {
    Fetched::Images(
        names
            .iter()
            .map(|n| Candidate::new(*n, "test list"))
            .collect(),
    )
}

/// An image source that answers from a script, one entry per call, then repeats the last;
/// `None` answers as a gateway that is down (HTTP 503).
pub(crate) struct ScriptedSource {
    script: Mutex<Vec<Option<Fetched>>>,
    pub(crate) calls: AtomicUsize,
}

impl ScriptedSource {
    pub(crate) fn new(script: Vec<Option<Fetched>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script),
            calls: AtomicUsize::new(0),
        })
    }

    /// A script of image lists (`None`: down).
    pub(crate) fn lists(script: Vec<Option<Vec<&str>>>) -> Arc<Self> {
        Self::new(
            script
                .into_iter()
                .map(|names| names.map(|n| images(&n)))
                .collect(),
        )
    }

    /// From now on, every call answers `fetched`.
    pub(crate) fn set(&self, fetched: Fetched) {
        *self.script.lock().unwrap() = vec![Some(fetched)];
    }
}

#[async_trait]
impl ImageSource for ScriptedSource {
    fn name(&self) -> &'static str {
        "Scripted"
    }

    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let script = self.script.lock().unwrap();
        let i = self
            .calls
            .fetch_add(1, Ordering::SeqCst)
            .min(script.len() - 1);
        script[i].clone().ok_or(FetchError::Status {
            url: "http://gw/api/kernelspecs".into(),
            status: 503,
        })
    }
}

/// A runtime whose pulls follow a per-image script of results, counting what it is asked.
#[derive(Default)]
pub(crate) struct FakeRuntime {
    /// Listed as on the node.
    pub(crate) present: Vec<String>,
    /// The record listing (grouped references, for `Always`).
    pub(crate) records: Vec<Vec<String>>,
    /// Per image, the results of its next pulls; success once they are used up.
    pub(crate) script: Mutex<HashMap<String, Vec<Result<(), ErrorKind>>>>,
    /// Images whose pulls take 30 s (abandoned at shutdown).
    pub(crate) slow: Vec<String>,
    /// How long every other pull takes.
    pub(crate) delay: Duration,
    /// Whether a pulled image is listed as on the node afterwards.
    pub(crate) keep_pulled: bool,
    /// Every pull started, in order.
    pub(crate) pulls: Mutex<Vec<String>>,
    /// Every pull that succeeded, in order.
    pub(crate) pulled: Mutex<Vec<String>>,
    pub(crate) lists: AtomicUsize,
    pub(crate) running: AtomicUsize,
    pub(crate) max_running: AtomicUsize,
}

impl FakeRuntime {
    /// What was pulled, when pulled images stay on the node.
    fn kept(&self) -> Vec<String> {
        if self.keep_pulled {
            self.pulled.lock().unwrap().clone()
        } else {
            Vec::new()
        }
    }
}

#[async_trait]
impl ImageRuntime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake".into())
    }

    async fn list_images(&self) -> Result<Vec<String>, RuntimeError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        Ok(self.present.iter().cloned().chain(self.kept()).collect())
    }

    async fn list_image_records(&self) -> Result<Vec<Vec<String>>, RuntimeError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let kept = self.kept().into_iter().map(|p| vec![p]);
        Ok(self.records.iter().cloned().chain(kept).collect())
    }

    async fn pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        let name = image.to_string();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        self.pulls.lock().unwrap().push(name.clone());
        if self.slow.contains(&name) {
            tokio::time::sleep(Duration::from_secs(30)).await;
        } else {
            tokio::time::sleep(self.delay).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let next = {
            let mut script = self.script.lock().unwrap();
            let steps = script.entry(name.clone()).or_default();
            if steps.is_empty() {
                Ok(())
            } else {
                steps.remove(0)
            }
        };
        next.map_err(|kind| RuntimeError::new(kind, "scripted"))?;
        self.pulled.lock().unwrap().push(name);
        Ok(PullOutcome::default())
    }
}
