//! The pull scheduler: bounded concurrency, one pull per image at a time, retries with backoff.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use eg_common::ImageRef;
use futures_util::{StreamExt, future::join_all, stream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::ports::TagResolver;
use crate::{
    metrics::Metrics,
    plan::{Present, to_pull},
    ports::{ErrorKind, ImageRuntime, PullOutcome, PullPolicy, RuntimeError, image_fs_usage},
};

/// How pulls are scheduled.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub policy: PullPolicy,
    /// Pulls at the same time.
    pub concurrency: usize,
    /// Attempts per image and cycle.
    pub attempts: usize,
    /// Time one attempt may take.
    pub attempt_timeout: Duration,
    /// First delay between attempts (doubled each time, with jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// No pulls while the runtime's image filesystem is at least this full (percent).
    pub max_disk_percent: Option<f64>,
}

/// What happened to one image in a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageResult {
    /// Already on the node (IfNotPresent).
    Present,
    Pulled {
        outcome: PullOutcome,
        elapsed: Duration,
        attempts: usize,
    },
    Failed {
        error: RuntimeError,
        attempts: usize,
    },
    /// Another pull of the same image was under way.
    InFlight,
    /// Shutdown began before or during the pull.
    Cancelled,
    /// `Always`: the registry's digest for the tag is the node's; nothing was pulled.
    Unchanged { digest: String },
    /// Not pulled this cycle, and why (the image filesystem is too full).
    Skipped { reason: String },
}

/// How many manifest HEADs one cycle sends at a time.
const DIGEST_CHECKS_AT_ONCE: usize = 8;

/// The outcome of one cycle, image by image, in the desired order.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub results: Vec<(ImageRef, ImageResult)>,
}

impl CycleReport {
    pub fn failed(&self) -> impl Iterator<Item = (&ImageRef, &RuntimeError)> {
        self.results.iter().filter_map(|(r, res)| match res {
            ImageResult::Failed { error, .. } => Some((r, error)),
            _ => None,
        })
    }

    pub fn count(&self, pred: impl Fn(&ImageResult) -> bool) -> usize {
        self.results.iter().filter(|(_, r)| pred(r)).count()
    }

    /// Images on the node at the end of the cycle (already present, unchanged or pulled).
    pub fn on_node(&self) -> usize {
        self.count(|r| {
            matches!(
                r,
                ImageResult::Present | ImageResult::Unchanged { .. } | ImageResult::Pulled { .. }
            )
        })
    }
}

/// Pulls images through one runtime.
pub struct Puller {
    runtime: Arc<dyn ImageRuntime>,
    options: PullOptions,
    metrics: Arc<Metrics>,
    /// Images queued or pulling, across overlapping cycles.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Bounds pulls across overlapping cycles to `concurrency`.
    slots: Arc<Semaphore>,
    /// With `Always`, pull only tags whose registry digest differs from the node's.
    resolver: Option<Arc<dyn TagResolver>>,
}

/// Removes an image from the in-flight set when its pull ends, however it ends.
struct InFlightGuard {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.lock().expect("in-flight lock").remove(&self.key);
    }
}

impl Puller {
    pub fn new(
        runtime: Arc<dyn ImageRuntime>,
        options: PullOptions,
        metrics: Arc<Metrics>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        Self {
            runtime,
            options,
            metrics,
            in_flight: Arc::default(),
            slots,
            resolver: None,
        }
    }

    /// With `Always`, checks each tag's digest with `resolver` before pulling it.
    pub fn with_resolver(mut self, resolver: Arc<dyn TagResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    pub fn runtime(&self) -> &Arc<dyn ImageRuntime> {
        &self.runtime
    }

    /// One cycle over the desired images. Fails only when the runtime cannot list its images
    /// (IfNotPresent); a failing image never stops the others.
    pub async fn run_cycle(
        &self,
        desired: &[ImageRef],
        cancel: &CancellationToken,
    ) -> Result<CycleReport, RuntimeError> {
        if desired.is_empty() {
            return Ok(CycleReport::default());
        }
        // One list call per cycle, not one call per image.
        let (pull, mut results) = match (self.options.policy, &self.resolver) {
            (PullPolicy::IfNotPresent, _) => {
                let present = Present::from_references(self.runtime.list_images().await?);
                let (pull, have) = to_pull(desired, &present, PullPolicy::IfNotPresent);
                let have = have.into_iter().map(|r| (r.clone(), ImageResult::Present));
                (pull, have.collect())
            }
            (PullPolicy::Always, None) => (desired.iter().collect(), Vec::new()),
            (PullPolicy::Always, Some(resolver)) => {
                let present = Present::from_records(self.runtime.list_image_records().await?);
                self.check_digests(desired, &present, resolver.as_ref())
                    .await
            }
        };
        let pulled = join_all(
            pull.into_iter()
                .map(|image| async move { (image.clone(), self.pull_one(image, cancel).await) }),
        )
        .await;
        results.extend(pulled);
        let order: Vec<String> = desired.iter().map(ImageRef::key).collect();
        results.sort_by_key(|(r, _)| order.iter().position(|k| *k == r.key()));
        Ok(CycleReport { results })
    }

    /// Why no pull may start now: the image filesystem is at or above the limit. `None` when it
    /// has room, no limit is set, or its usage cannot be read (logged).
    async fn disk_full(&self) -> Option<String> {
        let limit = self.options.max_disk_percent?;
        let used = image_fs_usage(self.runtime.as_ref()).await?.percent();
        (used >= limit).then(|| {
            format!(
                "image filesystem {used:.0}% full, at or above KIP_MAX_DISK_USAGE_PERCENT={limit}"
            )
        })
    }

    /// `Always` with a resolver: a digest-pinned image on the node is never re-checked; a tag on
    /// the node is pulled only when the registry's digest differs (or cannot be had); anything
    /// else is pulled.
    async fn check_digests<'a>(
        &self,
        desired: &'a [ImageRef],
        present: &Present,
        resolver: &dyn TagResolver,
    ) -> (Vec<&'a ImageRef>, Vec<(ImageRef, ImageResult)>) {
        let runtime = self.runtime.name();
        let checks = stream::iter(desired)
            .map(|image| async move {
                if !present.contains(image) {
                    return (image, None);
                }
                if image.digest().is_some() {
                    return (image, Some(ImageResult::Present));
                }
                match resolver.digest(image).await {
                    Ok(digest) if present.tag_points_to(image, &digest) => {
                        debug!(image = %image, runtime, digest, "tag unchanged; not pulled");
                        self.metrics.record_digest_check("unchanged");
                        (image, Some(ImageResult::Unchanged { digest }))
                    }
                    Ok(digest) => {
                        info!(image = %image, runtime, digest, "tag moved; pulling");
                        self.metrics.record_digest_check("changed");
                        (image, None)
                    }
                    Err(error) => {
                        warn!(image = %image, runtime, %error, "digest check failed; pulling");
                        self.metrics.record_digest_check("error");
                        (image, None)
                    }
                }
            })
            .buffered(DIGEST_CHECKS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut pull = Vec::new();
        let mut done = Vec::new();
        for (image, result) in checks {
            match result {
                Some(result) => done.push((image.clone(), result)),
                None => pull.push(image),
            }
        }
        (pull, done)
    }

    async fn pull_one(&self, image: &ImageRef, cancel: &CancellationToken) -> ImageResult {
        if cancel.is_cancelled() {
            return ImageResult::Cancelled;
        }
        // Claimed before waiting for a slot, so a later cycle does not queue it again.
        let key = image.key();
        if !self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.clone())
        {
            return ImageResult::InFlight;
        }
        let _guard = InFlightGuard {
            set: self.in_flight.clone(),
            key,
        };
        let _slot = tokio::select! {
            slot = self.slots.acquire() => slot.expect("the semaphore is never closed"),
            () = cancel.cancelled() => return ImageResult::Cancelled,
        };

        let runtime = self.runtime.name();
        // Checked as each pull starts: earlier pulls of this cycle may have filled it.
        if let Some(reason) = self.disk_full().await {
            warn!(image = %image, runtime, outcome = "skipped", reason, "pull skipped: image filesystem too full");
            self.metrics.record_pull(
                runtime,
                ErrorKind::DiskPressure.as_str(),
                Duration::ZERO,
                None,
            );
            return ImageResult::Skipped { reason };
        }
        let started = Instant::now();
        let mut attempts = 0usize;
        let attempt = || {
            attempts += 1;
            async {
                match tokio::time::timeout(self.options.attempt_timeout, self.runtime.pull(image))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(RuntimeError::new(
                        ErrorKind::Timeout,
                        format!(
                            "attempt took longer than {}s (KIP_PULL_TIMEOUT)",
                            self.options.attempt_timeout.as_secs()
                        ),
                    )),
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.backoff_min)
            .with_max_delay(self.options.backoff_max)
            .with_max_times(self.options.attempts.saturating_sub(1))
            .with_jitter();
        let retried = attempt
            .retry(backoff)
            .when(|e: &RuntimeError| e.kind.is_retryable())
            .notify(|e: &RuntimeError, delay: Duration| {
                warn!(image = %image, runtime, error = %e, retry_in_ms = delay.as_millis() as u64, "pull attempt failed");
            });
        let result = tokio::select! {
            r = retried => r,
            () = cancel.cancelled() => {
                info!(image = %image, runtime, outcome = "cancelled", "pull abandoned for shutdown");
                self.metrics.record_pull(runtime, "cancelled", started.elapsed(), None);
                return ImageResult::Cancelled;
            }
        };
        let elapsed = started.elapsed();
        match &result {
            Ok(outcome) => self
                .metrics
                .record_pull(runtime, "pulled", elapsed, outcome.bytes),
            Err(error) => self
                .metrics
                .record_pull(runtime, error.kind.as_str(), elapsed, None),
        }
        let duration_ms = elapsed.as_millis() as u64;
        match result {
            Ok(outcome) => {
                info!(
                    image = %image,
                    runtime,
                    outcome = "pulled",
                    duration_ms,
                    bytes = outcome.bytes,
                    image_id = outcome.image_id.as_deref(),
                    attempts,
                    "pull finished"
                );
                ImageResult::Pulled {
                    outcome,
                    elapsed,
                    attempts,
                }
            }
            Err(error) if error.kind == ErrorKind::DiskPressure => {
                warn!(image = %image, runtime, outcome = "skipped", reason = error.message, "pull skipped: image filesystem too full");
                ImageResult::Skipped {
                    reason: error.message,
                }
            }
            Err(error) => {
                warn!(
                    image = %image,
                    runtime,
                    outcome = "failed",
                    reason = error.kind.as_str(),
                    error = %error.message,
                    duration_ms,
                    attempts,
                    "pull finished"
                );
                ImageResult::Failed { error, attempts }
            }
        }
    }
}

#[cfg(test)]
mod tests;
