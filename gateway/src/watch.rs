//! Keeps the served listing current: filesystem notifications (inotify through `notify`) trigger a
//! rescan at once, and a periodic rescan catches whatever notifications miss (directories created
//! after start, network filesystems). Every change is published on a `tokio::sync::watch` channel,
//! which is what held watch requests wait on: an idle watcher costs one channel subscription and
//! no polling.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::kernelspecs::{Listing, ListingOptions, LoadError, scan};
use crate::metrics::Metrics;

/// How long to let a burst of filesystem events settle before rescanning.
const SETTLE: Duration = Duration::from_millis(50);

/// The current listing and the channel its changes are published on.
pub struct Store {
    dirs: Vec<PathBuf>,
    options: ListingOptions,
    tx: watch::Sender<Arc<Listing>>,
    /// The load errors of the last scan, so each is logged once, not at every rescan.
    last_errors: Mutex<Vec<LoadError>>,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Scans `dirs` once and holds the result.
    pub fn new(dirs: Vec<PathBuf>, options: ListingOptions, metrics: Arc<Metrics>) -> Self {
        let (tx, _) = watch::channel(Arc::new(Listing::empty(&options)));
        let store = Self {
            dirs,
            options,
            tx,
            last_errors: Mutex::default(),
            metrics,
        };
        store.rescan();
        store
    }

    pub fn options(&self) -> &ListingOptions {
        &self.options
    }

    /// The listing served now.
    pub fn current(&self) -> Arc<Listing> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later change of the listing.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Listing>> {
        self.tx.subscribe()
    }

    /// Rescans the directories; publishes and returns `true` when the listing or any loaded spec
    /// changed.
    pub fn rescan(&self) -> bool {
        let (specs, errors) = scan(&self.dirs);
        self.log_errors(errors);
        let listing = Listing::build(specs, &self.options);
        self.metrics.set_kernelspecs(listing.listed);
        let mut changed_etag = None;
        self.tx.send_if_modified(|current| {
            if current.etag == listing.etag && current.specs == listing.specs {
                return false;
            }
            changed_etag = Some((current.etag.clone(), listing.etag.clone()));
            *current = Arc::new(listing);
            true
        });
        match changed_etag {
            Some((old, new)) => {
                let current = self.current();
                info!(
                    kernelspecs = current.listed,
                    loaded = current.specs.len(),
                    old_etag = %old,
                    etag = %new,
                    "kernelspecs changed"
                );
                self.metrics.record_reload("changed");
                true
            }
            None => {
                self.metrics.record_reload("unchanged");
                false
            }
        }
    }

    fn log_errors(&self, errors: Vec<LoadError>) {
        let mut last = self.last_errors.lock().unwrap_or_else(|e| e.into_inner());
        for e in &errors {
            if !last.contains(e) {
                error!(file = %e.file.display(), reason = %e.reason, "kernelspec skipped");
            }
        }
        *last = errors;
    }

    /// The directories searched, in priority order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// Watches the directories and rescans on every change and every `interval`, until `cancel`.
pub async fn run_reloader(store: Arc<Store>, interval: Duration, cancel: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() => {}
            Ok(_) => waker.notify_one(),
            Err(e) => {
                warn!(error = %e, "filesystem notification error; rescanning");
                waker.notify_one();
            }
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no filesystem notifications; relying on the periodic rescan");
                None
            }
        };
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        if let Some(w) = watcher.as_mut() {
            update_watches(w, store.dirs(), &mut watched);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = wake.notified() => {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(SETTLE) => {}
                }
            }
            _ = ticker.tick() => {}
        }
        let s = store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || s.rescan()).await {
            error!(error = %e, "kernelspec rescan panicked");
        }
    }
    debug!("kernelspec reloader stopped");
}

/// Watches each search directory that exists (recursively: a `kernel.json` edit inside a spec dir
/// must be seen) and forgets those that went away.
fn update_watches(
    watcher: &mut notify::RecommendedWatcher,
    dirs: &[PathBuf],
    watched: &mut BTreeSet<PathBuf>,
) {
    for dir in dirs {
        let exists = dir.is_dir();
        if exists && !watched.contains(dir) {
            match watcher.watch(dir, RecursiveMode::Recursive) {
                Ok(()) => {
                    debug!(dir = %dir.display(), "watching kernelspec directory");
                    watched.insert(dir.clone());
                }
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot watch; periodic rescan only")
                }
            }
        } else if !exists && watched.remove(dir) {
            let _ = watcher.unwatch(dir);
        }
    }
}
