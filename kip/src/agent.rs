//! The agent: fetch the image list, plan, pull; once or forever.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::sync::watch;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    admin::Readiness,
    metrics::Metrics,
    plan::{self, Desired},
    ports::RuntimeError,
    puller::{CycleReport, ImageResult, Puller},
    source::{FetchError, Fetched, ImageSource},
};

/// How the loop waits and retries.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub interval: Duration,
    pub default_registry: Option<String>,
    /// Attempts at the image list in `--once` mode.
    pub fetch_attempts: usize,
    /// First delay after a failed fetch or listing; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Why `--once` could not run a cycle at all.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("could not read the image list: {0}")]
    Fetch(#[from] FetchError),
    #[error("container runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("shut down before the cycle finished")]
    Cancelled,
}

/// The result of `--once`.
#[derive(Debug, Clone)]
pub struct OnceReport {
    pub desired: Desired,
    pub cycle: CycleReport,
}

impl OnceReport {
    /// One line per image that is not on the node, or not a valid name, naming it and why.
    pub fn failures(&self) -> Vec<String> {
        let invalid = self
            .desired
            .invalid
            .iter()
            .map(|i| format!("invalid image name: {i}"));
        let failed = self
            .cycle
            .results
            .iter()
            .filter_map(|(image, result)| match result {
                ImageResult::Failed { error, attempts } => {
                    Some(format!("{image}: {error} (after {attempts} attempt(s))"))
                }
                ImageResult::Cancelled => Some(format!("{image}: cancelled by shutdown")),
                ImageResult::Skipped { reason } => Some(format!("{image}: skipped: {reason}")),
                _ => None,
            });
        invalid.chain(failed).collect()
    }
}

/// Fetches, plans and pulls.
pub struct Agent {
    source: Arc<dyn ImageSource>,
    puller: Puller,
    options: AgentOptions,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    runtime_answered: AtomicBool,
}

impl Agent {
    pub fn new(
        source: Arc<dyn ImageSource>,
        puller: Puller,
        options: AgentOptions,
        metrics: Arc<Metrics>,
        ready: Arc<Readiness>,
    ) -> Self {
        Self {
            source,
            puller,
            options,
            metrics,
            ready,
            runtime_answered: AtomicBool::new(false),
        }
    }

    /// Reads the image list, counting the outcome.
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let result = self.source.fetch().await;
        self.metrics.record_fetch(match &result {
            Ok(Fetched::Images(_)) => "ok",
            Ok(Fetched::NotModified) => "not_modified",
            Err(_) => "error",
        });
        result
    }

    /// Asks the runtime for its version until it first answers.
    async fn check_runtime(&self) -> Result<(), RuntimeError> {
        if !self.runtime_answered.load(Ordering::Relaxed) {
            let runtime = self.puller.runtime();
            let version = runtime.version().await?;
            info!(runtime = runtime.name(), version, "runtime answered");
            self.runtime_answered.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn cycle_done(&self, desired: &Desired, report: &CycleReport) {
        self.metrics
            .record_cycle(desired.images.len(), report.on_node());
        self.ready.set(true);
        log_cycle(report);
    }

    fn resolve(&self, fetched: &[plan::Candidate]) -> Desired {
        plan::resolve(fetched, self.options.default_registry.as_deref())
    }

    /// Logs a list just read (`event`), and each invalid name in it.
    fn announce(&self, desired: &Desired, event: &str) {
        for invalid in &desired.invalid {
            error!(origin = %invalid.origin, image = %invalid.image, error = %invalid.error, "invalid image name skipped");
        }
        info!(
            fetcher = self.source.name(),
            images = desired.images.len(),
            invalid = desired.invalid.len(),
            "{event}"
        );
    }

    /// One cycle: the image list (retried with backoff), then every image. Used by `--once`.
    pub async fn run_once(&self, cancel: &CancellationToken) -> Result<OnceReport, AgentError> {
        let mut delay = self.options.retry_min;
        let mut attempt = 0;
        let candidates = loop {
            attempt += 1;
            match self.fetch().await {
                Ok(Fetched::Images(candidates)) => break candidates,
                // No ETag was sent yet, so this only happens with a misbehaving server.
                Ok(Fetched::NotModified) => break Vec::new(),
                Err(e) if attempt >= self.options.fetch_attempts => return Err(e.into()),
                Err(e) => {
                    warn!(fetcher = self.source.name(), error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "image list unavailable");
                    if sleep_or_cancel(delay, cancel).await {
                        return Err(AgentError::Cancelled);
                    }
                    delay = (delay * 2).min(self.options.retry_max);
                }
            }
        };
        let desired = self.resolve(&candidates);
        self.announce(&desired, "image list read");
        let cycle = self.puller.run_cycle(&desired.images, cancel).await?;
        self.cycle_done(&desired, &cycle);
        Ok(OnceReport { desired, cycle })
    }

    /// Runs until `cancel`. Two loops share the desired list through a watch channel:
    ///
    /// - the fetch loop reads the list: again at once when the source holds watches, else every
    ///   interval with jitter; a failing source is retried with backoff and the last list kept;
    /// - the pull loop runs a cycle when the list changes, every interval, and after a failed
    ///   cycle with backoff. Cycles may overlap (a slow pull never delays a new image); the puller
    ///   keeps one pull per image and bounds the total.
    ///
    /// Nothing here ends the loops but shutdown.
    pub async fn run(&self, cancel: &CancellationToken) {
        let (tx, rx) = watch::channel::<Option<Arc<Desired>>>(None);
        tokio::join!(self.fetch_loop(tx, cancel), self.pull_loop(rx, cancel));
        info!("shutdown: pull loop stopped");
    }

    async fn fetch_loop(
        &self,
        tx: watch::Sender<Option<Arc<Desired>>>,
        cancel: &CancellationToken,
    ) {
        let mut delay = self.options.retry_min;
        let retry_max = self.options.retry_max.min(self.options.interval);
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.fetch() => r,
                () = cancel.cancelled() => return,
            };
            let wait = match result {
                Ok(fetched) => {
                    delay = self.options.retry_min;
                    if let Fetched::Images(candidates) = fetched {
                        let new = self.resolve(&candidates);
                        if tx.borrow().as_deref() != Some(&new) {
                            self.announce(&new, "image list changed");
                            tx.send_replace(Some(Arc::new(new)));
                        }
                    }
                    if self.source.watches() {
                        // The source held the request until a change or its wait ended; ask again
                        // at once, but never spin on a server that answers watches immediately.
                        if started.elapsed() < Duration::from_secs(1) {
                            Duration::from_secs(1)
                        } else {
                            Duration::ZERO
                        }
                    } else {
                        jittered(self.options.interval)
                    }
                }
                Err(e) => {
                    let kept = tx.borrow().is_some();
                    warn!(fetcher = self.source.name(), error = %e, kept_previous = kept, retry_in_ms = delay.as_millis() as u64, "image list unavailable");
                    let d = delay;
                    delay = (delay * 2).min(retry_max);
                    d
                }
            };
            if sleep_or_cancel(wait, cancel).await {
                return;
            }
        }
    }

    async fn pull_loop(
        &self,
        mut rx: watch::Receiver<Option<Arc<Desired>>>,
        cancel: &CancellationToken,
    ) {
        let mut cycles = FuturesUnordered::new();
        let mut next: Option<Instant> = None;
        let mut delay = self.options.retry_min;
        let retry_max = self.options.retry_max.min(self.options.interval);
        loop {
            let due = next.is_some_and(|at| at <= Instant::now());
            if due && let Some(desired) = rx.borrow().clone() {
                cycles.push(self.cycle(desired, cancel));
                next = Some(Instant::now() + self.options.interval);
            }
            let sleep_until = next.unwrap_or_else(|| Instant::now() + self.options.interval);
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    next = Some(Instant::now());
                }
                () = tokio::time::sleep_until(sleep_until.into()) => {}
                Some(result) = cycles.next(), if !cycles.is_empty() => match result {
                    Ok(()) => delay = self.options.retry_min,
                    Err(e) => {
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cycle did not complete");
                        next = Some(Instant::now() + delay);
                        delay = (delay * 2).min(retry_max);
                    }
                },
                () = cancel.cancelled() => break,
            }
        }
        // Pulls observe the cancellation themselves; let the cycles record how they ended.
        while cycles.next().await.is_some() {}
    }

    async fn cycle(
        &self,
        desired: Arc<Desired>,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        self.check_runtime().await?;
        let report = self.puller.run_cycle(&desired.images, cancel).await?;
        if !cancel.is_cancelled() {
            self.cycle_done(&desired, &report);
        }
        Ok(())
    }
}

fn log_cycle(report: &CycleReport) {
    info!(
        images = report.results.len(),
        present = report.count(|r| *r == ImageResult::Present),
        pulled = report.count(|r| matches!(r, ImageResult::Pulled { .. })),
        failed = report.count(|r| matches!(r, ImageResult::Failed { .. })),
        "cycle finished"
    );
}

/// The interval ± 10 %, so a fleet of agents started together does not ask in lockstep.
fn jittered(interval: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    // A cheap scramble of the clock is enough to spread agents; this is not cryptography.
    let unit = f64::from(nanos.wrapping_mul(2_654_435_761) % 1_000_001) / 1_000_000.0;
    interval.mul_f64(0.9 + 0.2 * unit)
}

/// Sleeps; returns true when woken by cancellation instead.
async fn sleep_or_cancel(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = cancel.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Mutex, atomic::Ordering},
    };

    use super::*;
    use crate::{
        config::PullPolicy,
        fakes::{FakeRuntime, ScriptedSource, images},
        ports::ErrorKind,
        puller::PullOptions,
    };

    /// A runtime that keeps what it pulled, on which `missing:1` is not found.
    fn runtime(slow: &[&str]) -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            keep_pulled: true,
            script: Mutex::new(HashMap::from([(
                "docker.io/library/missing:1".to_owned(),
                vec![Err(ErrorKind::NotFound); 4],
            )])),
            slow: slow.iter().map(|s| (*s).to_owned()).collect(),
            ..FakeRuntime::default()
        })
    }

    fn make_agent(
        script: Vec<Option<Vec<&'static str>>>,
        interval_ms: u64,
    ) -> (Agent, Arc<FakeRuntime>, Arc<ScriptedSource>) {
        let rt = runtime(&[]);
        let source = ScriptedSource::lists(script);
        let puller = Puller::new(
            rt.clone(),
            PullOptions {
                policy: PullPolicy::IfNotPresent,
                concurrency: 2,
                attempts: 2,
                attempt_timeout: Duration::from_secs(5),
                backoff_min: Duration::from_millis(1),
                backoff_max: Duration::from_millis(2),
                max_disk_percent: None,
            },
            Arc::default(),
        );
        let agent = Agent::new(
            source.clone(),
            puller,
            AgentOptions {
                interval: Duration::from_millis(interval_ms),
                default_registry: None,
                fetch_attempts: 3,
                retry_min: Duration::from_millis(5),
                retry_max: Duration::from_millis(20),
            },
            Arc::default(),
            Arc::default(),
        );
        (agent, rt, source)
    }

    #[tokio::test]
    async fn once_names_every_failure() {
        let (agent, rt, _) = make_agent(vec![Some(vec!["a:1", "missing:1", "Bad:1", "b:1"])], 1000);
        let report = agent.run_once(&CancellationToken::new()).await.unwrap();
        assert_eq!(rt.pulled.lock().unwrap().len(), 2);
        let failures = report.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures[0].starts_with("invalid image name: test list: \"Bad:1\""),
            "{failures:?}"
        );
        assert!(
            failures[1].starts_with("docker.io/library/missing:1: not_found"),
            "{failures:?}"
        );
    }

    #[tokio::test]
    async fn once_retries_the_source_then_gives_up() {
        let (agent, _, source) = make_agent(vec![None, None, Some(vec!["a:1"])], 1000);
        let report = agent.run_once(&CancellationToken::new()).await.unwrap();
        assert_eq!(source.calls.load(Ordering::SeqCst), 3);
        assert!(report.failures().is_empty());

        let (agent, _, source) = make_agent(vec![None], 1000);
        let err = agent.run_once(&CancellationToken::new()).await.unwrap_err();
        assert_eq!(source.calls.load(Ordering::SeqCst), 3);
        assert!(err.to_string().contains("HTTP 503"), "{err}");
    }

    #[tokio::test]
    async fn daemon_waits_for_the_source_and_keeps_the_last_list() {
        // Down at start, then a list, then down again, then a longer list.
        let (agent, rt, source) = make_agent(
            vec![
                None,
                None,
                Some(vec!["a:1"]),
                None,
                Some(vec!["a:1", "b:1"]),
            ],
            10,
        );
        let cancel = CancellationToken::new();
        let run = agent.run(&cancel);
        let stop = async {
            for _ in 0..200 {
                if rt.pulled.lock().unwrap().len() == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            cancel.cancel();
        };
        tokio::join!(run, stop);
        assert_eq!(
            *rt.pulled.lock().unwrap(),
            vec!["docker.io/library/a:1", "docker.io/library/b:1"]
        );
        assert!(source.calls.load(Ordering::SeqCst) >= 5);
    }

    #[tokio::test]
    async fn a_slow_pull_never_delays_a_new_image() {
        let rt = runtime(&["docker.io/library/slow:1"]);
        let source = ScriptedSource::lists(vec![Some(vec!["slow:1"])]);
        let options = PullOptions {
            policy: PullPolicy::IfNotPresent,
            concurrency: 2,
            attempts: 1,
            attempt_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            max_disk_percent: None,
        };
        let metrics: Arc<Metrics> = Arc::default();
        let agent = Agent::new(
            source.clone(),
            Puller::new(rt.clone(), options, metrics.clone()),
            AgentOptions {
                // Short enough that the list is read again soon, long beside the check below.
                interval: Duration::from_millis(50),
                default_registry: None,
                fetch_attempts: 1,
                retry_min: Duration::from_millis(5),
                retry_max: Duration::from_millis(20),
            },
            metrics,
            Arc::default(),
        );
        let cancel = CancellationToken::new();
        let check = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            source.set(images(&["slow:1", "fresh:1"]));
            let started = Instant::now();
            while !rt
                .pulled
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.contains("fresh"))
            {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the new image waited for the slow pull"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        };
        tokio::join!(agent.run(&cancel), check);
        // The slow pull was abandoned at shutdown, never finished.
        assert_eq!(
            *rt.pulled.lock().unwrap(),
            vec!["docker.io/library/fresh:1"]
        );
    }
}
