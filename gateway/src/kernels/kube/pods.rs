//! One watch over every kernel pod of the gateway (labels `app=enterprise-gateway`,
//! `component=kernel`), shared by all kernels: launches wait on it for their pod to run or fail,
//! running kernels learn from it that their pod has gone. No kernel ever lists pods on its own.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The label selector of every kernel pod.
pub const KERNEL_POD_SELECTOR: &str = "app=enterprise-gateway,component=kernel";

/// The latest state of one kernel's pod: `None` while it does not exist.
pub type PodState = Option<Arc<Pod>>;

#[derive(Default)]
struct Table {
    by_kernel: HashMap<String, watch::Sender<PodState>>,
    /// Kernel ids seen since the watch (re)started listing, to find pods deleted meanwhile.
    listing: Option<HashSet<String>>,
}

/// The shared pod watch.
#[derive(Clone)]
pub struct PodWatch {
    table: Arc<Mutex<Table>>,
    synced: watch::Receiver<bool>,
}

fn kernel_id_of(pod: &Pod) -> Option<String> {
    pod.labels().get("kernel_id").cloned()
}

impl PodWatch {
    /// Starts watching kernel pods in `namespace` (all namespaces when `None`) until `cancel`.
    pub fn start(client: Client, namespace: Option<&str>, cancel: CancellationToken) -> Self {
        let api: Api<Pod> = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let table = Arc::new(Mutex::new(Table::default()));
        let (synced_tx, synced) = watch::channel(false);
        let this = Self { table, synced };
        let events = watcher(api, watcher::Config::default().labels(KERNEL_POD_SELECTOR))
            .default_backoff()
            .boxed();
        let runner = this.clone();
        tokio::spawn(async move {
            let mut events = events;
            loop {
                let event = tokio::select! {
                    () = cancel.cancelled() => break,
                    e = events.next() => e,
                };
                match event {
                    Some(Ok(e)) => {
                        if runner.apply(e) {
                            synced_tx.send_replace(true);
                        }
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "kernel pod watch failed; retrying");
                    }
                    None => break,
                }
            }
            debug!("kernel pod watch stopped");
        });
        this
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one watch event; returns true once a listing has completed.
    fn apply(&self, event: watcher::Event<Pod>) -> bool {
        let mut t = self.table();
        match event {
            watcher::Event::Init => {
                t.listing = Some(HashSet::new());
                false
            }
            watcher::Event::InitApply(pod) => {
                if let Some(id) = kernel_id_of(&pod) {
                    if let Some(seen) = &mut t.listing {
                        seen.insert(id.clone());
                    }
                    publish(&mut t, id, Some(Arc::new(pod)));
                }
                false
            }
            watcher::Event::InitDone => {
                let seen = t.listing.take().unwrap_or_default();
                let gone: Vec<String> = t
                    .by_kernel
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for id in gone {
                    publish(&mut t, id, None);
                }
                info!(pods = seen.len(), "kernel pod watch listed");
                true
            }
            watcher::Event::Apply(pod) => {
                if let Some(id) = kernel_id_of(&pod) {
                    publish(&mut t, id, Some(Arc::new(pod)));
                }
                false
            }
            watcher::Event::Delete(pod) => {
                if let Some(id) = kernel_id_of(&pod) {
                    // A pod of an older run of the kernel (deleted during a restart) must not
                    // hide the new one.
                    let current = t
                        .by_kernel
                        .get(&id)
                        .and_then(|s| s.borrow().as_ref().map(|p| p.uid()));
                    if current.is_none() || current == Some(pod.uid()) {
                        publish(&mut t, id, None);
                    }
                }
                false
            }
        }
    }

    /// The kernel's pod as it changes. Subscribe before creating the pod.
    pub fn subscribe(&self, kernel_id: &str) -> watch::Receiver<PodState> {
        let mut t = self.table();
        t.by_kernel
            .entry(kernel_id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Waits until the first listing has completed (kernels' pods are known).
    pub async fn synced(&self) {
        let mut s = self.synced.clone();
        let _ = s.wait_for(|v| *v).await;
    }

    /// How many kernels the watch tracks (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.table().by_kernel.len()
    }
}

/// Sets a kernel's pod state; forgets kernels whose pod is gone and that nobody waits on.
fn publish(t: &mut Table, id: String, state: PodState) {
    let gone = state.is_none();
    match t.by_kernel.get(&id) {
        Some(tx) => {
            tx.send_replace(state);
            if gone && tx.receiver_count() == 0 {
                t.by_kernel.remove(&id);
            }
        }
        None if !gone => {
            t.by_kernel.insert(id, watch::channel(state).0);
        }
        None => {}
    }
}
