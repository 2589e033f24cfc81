//! The scheduler against a scripted runtime: concurrency, retries, policies, cancellation.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;

use super::*;
use crate::fakes::FakeRuntime;

fn options(policy: PullPolicy) -> PullOptions {
    PullOptions {
        policy,
        concurrency: 2,
        attempts: 3,
        attempt_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        max_disk_percent: None,
    }
}

/// A runtime whose every pull takes `delay`.
fn slow_runtime(delay: Duration) -> Arc<FakeRuntime> {
    Arc::new(FakeRuntime {
        delay,
        ..Default::default()
    })
}

/// A puller with `policy` over `rt`.
fn puller(rt: &Arc<FakeRuntime>, policy: PullPolicy) -> Puller {
    Puller::new(rt.clone(), options(policy), Arc::default())
}

/// One cycle of `p` over `images`, never cancelled.
async fn cycle(p: &Puller, images: &[&str]) -> CycleReport {
    p.run_cycle(&refs(images), &CancellationToken::new())
        .await
        .unwrap()
}

fn refs(names: &[&str]) -> Vec<ImageRef> {
    names.iter().map(|n| ImageRef::parse(n).unwrap()).collect()
}

fn pulls_of(rt: &FakeRuntime, image: &str) -> usize {
    let full = ImageRef::parse(image).unwrap().to_string();
    rt.pulls
        .lock()
        .unwrap()
        .iter()
        .filter(|p| **p == full)
        .count()
}

#[tokio::test]
async fn if_not_present_lists_once_and_skips_present() {
    let rt = Arc::new(FakeRuntime {
        present: vec!["a:1".into(), "docker.io/library/b:1".into()],
        ..Default::default()
    });
    let p = puller(&rt, PullPolicy::IfNotPresent);
    let report = cycle(&p, &["a:1", "b:1", "c:1"]).await;
    assert_eq!(rt.lists.load(Ordering::SeqCst), 1);
    assert_eq!(*rt.pulls.lock().unwrap(), vec!["docker.io/library/c:1"]);
    assert_eq!(report.count(|r| *r == ImageResult::Present), 2);
    assert_eq!(report.results[2].0.to_string(), "docker.io/library/c:1");
    assert!(matches!(
        report.results[2].1,
        ImageResult::Pulled { attempts: 1, .. }
    ));
}

#[tokio::test]
async fn always_pulls_everything_without_listing() {
    let rt = Arc::new(FakeRuntime {
        present: vec!["a:1".into()],
        ..Default::default()
    });
    let p = puller(&rt, PullPolicy::Always);
    cycle(&p, &["a:1", "b:1"]).await;
    assert_eq!(rt.lists.load(Ordering::SeqCst), 0);
    assert_eq!(rt.pulls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn retries_transient_errors_but_not_not_found_or_unauthorized() {
    let rt = Arc::new(FakeRuntime::default());
    {
        let mut s = rt.script.lock().unwrap();
        s.insert(
            "docker.io/library/flaky:1".into(),
            vec![Err(ErrorKind::Unavailable), Err(ErrorKind::Timeout)],
        );
        s.insert(
            "docker.io/library/gone:1".into(),
            vec![Err(ErrorKind::NotFound)],
        );
        s.insert(
            "docker.io/library/secret:1".into(),
            vec![Err(ErrorKind::Unauthorized)],
        );
        s.insert(
            "docker.io/library/broken:1".into(),
            vec![Err(ErrorKind::Other); 5],
        );
    }
    let p = puller(&rt, PullPolicy::Always);
    let report = cycle(&p, &["flaky:1", "gone:1", "secret:1", "broken:1", "fine:1"]).await;
    assert_eq!(pulls_of(&rt, "flaky:1"), 3);
    assert_eq!(pulls_of(&rt, "gone:1"), 1);
    assert_eq!(pulls_of(&rt, "secret:1"), 1);
    assert_eq!(
        pulls_of(&rt, "broken:1"),
        3,
        "KIP_NUM_RETRIES bounds the attempts"
    );
    assert_eq!(pulls_of(&rt, "fine:1"), 1);
    let failed: Vec<(String, ErrorKind)> = report
        .failed()
        .map(|(r, e)| (r.to_string(), e.kind))
        .collect();
    assert_eq!(
        failed,
        vec![
            ("docker.io/library/gone:1".into(), ErrorKind::NotFound),
            ("docker.io/library/secret:1".into(), ErrorKind::Unauthorized),
            ("docker.io/library/broken:1".into(), ErrorKind::Other),
        ]
    );
    assert!(matches!(
        report.results[0].1,
        ImageResult::Pulled { attempts: 3, .. }
    ));
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let rt = slow_runtime(Duration::from_millis(30));
    let p = puller(&rt, PullPolicy::Always);
    cycle(&p, &["a:1", "b:1", "c:1", "d:1", "e:1"]).await;
    assert_eq!(rt.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn one_image_is_never_pulled_twice_at_once() {
    let rt = slow_runtime(Duration::from_millis(100));
    let p = Arc::new(puller(&rt, PullPolicy::Always));
    let cancel = CancellationToken::new();
    let images = refs(&["a:1"]);
    let (r1, r2) = tokio::join!(p.run_cycle(&images, &cancel), p.run_cycle(&images, &cancel));
    let results = [&r1.unwrap().results[0].1, &r2.unwrap().results[0].1];
    assert_eq!(pulls_of(&rt, "a:1"), 1);
    assert!(results.contains(&&ImageResult::InFlight), "{results:?}");
}

#[tokio::test]
async fn attempt_timeout_counts_as_timeout() {
    let rt = slow_runtime(Duration::from_millis(200));
    let mut o = options(PullPolicy::Always);
    o.attempt_timeout = Duration::from_millis(20);
    o.attempts = 2;
    let p = Puller::new(rt.clone(), o, Arc::default());
    let report = cycle(&p, &["slow:1"]).await;
    assert!(matches!(
        &report.results[0].1,
        ImageResult::Failed { error, attempts: 2 } if error.kind == ErrorKind::Timeout
    ));
}

#[tokio::test]
async fn cancellation_abandons_pulls() {
    let rt = slow_runtime(Duration::from_secs(30));
    let p = puller(&rt, PullPolicy::Always);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c2.cancel();
    });
    let started = Instant::now();
    let report = p
        .run_cycle(&refs(&["a:1", "b:1", "c:1"]), &cancel)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.count(|r| *r == ImageResult::Cancelled), 3);
}

/// Answers digests from a table; counts the HEADs.
struct TableResolver(HashMap<String, Result<String, ErrorKind>>, AtomicUsize);

#[async_trait]
impl TagResolver for TableResolver {
    async fn digest(&self, image: &ImageRef) -> Result<String, RuntimeError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        match self.0.get(&image.to_string()) {
            Some(Ok(d)) => Ok(d.clone()),
            Some(Err(kind)) => Err(RuntimeError::new(*kind, "scripted")),
            None => panic!("unexpected HEAD for {image}"),
        }
    }
}

#[tokio::test]
async fn always_pulls_only_moved_tags() {
    let d = |n: u8| format!("sha256:{}", format!("{n:x}").repeat(64));
    let rt = Arc::new(FakeRuntime {
        records: vec![
            vec!["a:1".into(), format!("a@{}", d(1))],
            vec!["b:1".into(), format!("b@{}", d(2))],
            vec![format!("c@{}", d(3))],
            vec!["e:1".into(), format!("e@{}", d(5))],
        ],
        ..Default::default()
    });
    let resolver = Arc::new(TableResolver(
        HashMap::from([
            ("docker.io/library/a:1".to_owned(), Ok(d(1))),
            ("docker.io/library/b:1".to_owned(), Ok(d(9))),
            (
                "docker.io/library/e:1".to_owned(),
                Err(ErrorKind::Unavailable),
            ),
        ]),
        AtomicUsize::new(0),
    ));
    let p = puller(&rt, PullPolicy::Always).with_resolver(resolver.clone());
    let pinned = format!("c@{}", d(3));
    let report = cycle(&p, &["a:1", "b:1", &pinned, "d:1", "e:1"]).await;
    assert_eq!(rt.lists.load(Ordering::SeqCst), 1, "one listing per cycle");
    // a unchanged; b moved; c pinned and present (never re-checked); d absent; e unknown.
    assert_eq!(resolver.1.load(Ordering::SeqCst), 3);
    let mut pulled = rt.pulls.lock().unwrap().clone();
    pulled.sort();
    assert_eq!(
        pulled,
        vec![
            "docker.io/library/b:1",
            "docker.io/library/d:1",
            "docker.io/library/e:1"
        ]
    );
    assert_eq!(report.results[0].1, ImageResult::Unchanged { digest: d(1) });
    assert_eq!(report.results[2].1, ImageResult::Present);
    assert_eq!(report.on_node(), 5);
}
