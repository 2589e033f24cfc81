//! A soak of the agent loop in-process (its own test binary, so no other test disturbs the
//! process's memory): 1,000 cycles with a tiny interval against the fake gateway's listing and
//! real containerd (CRI), and the resident memory must stay flat.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use e2e::{FakeGateway, kernelspec_entry, push_images};
use eg_common::ImageRef;
use kip::{
    admin::Readiness,
    agent::{Agent, AgentOptions},
    config::{Endpoint, PullPolicy},
    metrics::Metrics,
    puller::{PullOptions, Puller},
    runtime::{CriRuntime, ImageRuntime, PullOutcome, RuntimeError},
    source::KernelSpecsSource,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Counts the cycles (one image list per cycle) of the real runtime it wraps.
struct Counting {
    inner: CriRuntime,
    lists: AtomicUsize,
}

#[async_trait]
impl ImageRuntime for Counting {
    fn name(&self) -> &'static str {
        "cri"
    }
    async fn version(&self) -> Result<String, RuntimeError> {
        self.inner.version().await
    }
    async fn list_image_records(&self) -> Result<Vec<Vec<String>>, RuntimeError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_image_records().await
    }
    async fn pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        self.inner.pull(image).await
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_cycles_keep_memory_flat() {
    let Some((registry, sock)) = e2e::Backend::CRI.with_socket("KIP_TEST_REGISTRY") else {
        return;
    };
    let images = push_images(&registry, "test/soak", 3);
    let specs: serde_json::Map<String, serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            (
                format!("k{i}"),
                kernelspec_entry(&format!("k{i}"), json!({"image_name": image})),
            )
        })
        .collect();
    let gateway = FakeGateway::start(json!({"default": "k0", "kernelspecs": specs}), None).await;
    let runtime = Arc::new(Counting {
        inner: CriRuntime::connect(&Endpoint::Unix(sock.into()), Default::default()).unwrap(),
        lists: AtomicUsize::new(0),
    });
    let metrics: Arc<Metrics> = Arc::default();
    let source = KernelSpecsSource::new(
        &gateway.url.parse().unwrap(),
        None,
        false,
        Duration::from_secs(5),
        None,
    )
    .unwrap();
    let agent = Agent::new(
        Arc::new(source),
        Puller::new(
            runtime.clone(),
            PullOptions {
                policy: PullPolicy::IfNotPresent,
                concurrency: 2,
                attempts: 3,
                attempt_timeout: Duration::from_secs(60),
                backoff_min: Duration::from_millis(10),
                backoff_max: Duration::from_millis(100),
                max_disk_percent: None,
            },
            metrics.clone(),
        ),
        AgentOptions {
            interval: Duration::from_millis(2),
            default_registry: None,
            fetch_attempts: 3,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
        },
        metrics.clone(),
        Arc::new(Readiness::default()),
    );
    let cancel = CancellationToken::new();
    let watch = async {
        let wait_for = |n: usize| {
            let runtime = runtime.clone();
            async move {
                while runtime.lists.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        // Warm up: the pulls, connection pools and allocator arenas settle.
        tokio::time::timeout(Duration::from_secs(120), wait_for(100))
            .await
            .expect("100 cycles");
        let before = rss_bytes();
        tokio::time::timeout(Duration::from_secs(300), wait_for(1100))
            .await
            .expect("1,000 more cycles");
        let after = rss_bytes();
        cancel.cancel();
        (before, after)
    };
    let ((before, after), ()) = tokio::join!(watch, agent.run(&cancel));
    let growth = after.saturating_sub(before);
    eprintln!(
        "soak: rss before {before} B, after {after} B, growth {growth} B, fetches {}",
        gateway.requests().len()
    );
    assert_eq!(metrics.images_present(), 3);
    // The fetch loop turns on its own (jittered) interval beside the pull loop; how many turns
    // it makes against 1,100 pull cycles depends on the machine (488 on a busy one), so the
    // check is that it kept reading, hundreds of times.
    assert!(
        gateway.requests().len() >= 250,
        "the list was not read again and again"
    );
    assert!(
        growth < 1024 * 1024,
        "RSS grew by {growth} bytes over 1,000 cycles"
    );
}
