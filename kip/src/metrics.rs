//! Prometheus metrics, owned by the application and passed to whoever records them.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use eg_common::metrics::{
    Counter, Exposition, Family, Gauge, Histogram, MetricsRegistry, Unit, exponential_buckets,
    preset,
};

use crate::ports::ErrorKind;

eg_common::label_sets! {
    pub struct PullLabels {
        runtime: String,
        /// `pulled`, or the failure kind (`not_found`, `unauthorized`, `unavailable`, `timeout`,
        /// `error`), or `cancelled`.
        result: String,
    }

    pub struct RuntimeLabels { runtime: String }

    pub struct FetchLabels {
        /// `ok`, `not_modified` or `error` (image list reads); `unchanged`, `changed` or `error`
        /// (digest checks).
        result: String,
    }
}

/// The results a pull ends with, besides the failure kinds.
const PULL_RESULTS: [&str; 2] = ["pulled", "cancelled"];
/// The results of a read of the image list.
const FETCH_RESULTS: [&str; 3] = ["ok", "not_modified", "error"];
/// The results of an `Always` digest check.
const DIGEST_CHECK_RESULTS: [&str; 3] = ["unchanged", "changed", "error"];

/// Every metric the agent exports, under the `kip_` prefix.
pub struct Metrics {
    registry: MetricsRegistry,
    pulls: Family<PullLabels, Counter>,
    pull_duration: Family<RuntimeLabels, Histogram>,
    pulled_bytes: Family<RuntimeLabels, Counter>,
    images_desired: Gauge,
    images_present: Gauge,
    fetches: Family<FetchLabels, Counter>,
    digest_checks: Family<FetchLabels, Counter>,
    last_cycle: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = MetricsRegistry::with_prefix("kip");
        Self {
            pulls: registry.counters("pulls", "Image pulls by runtime and result"),
            // 0.1 s … ~27 min: kernel images take seconds to many minutes.
            pull_duration: registry.histograms(
                "pull_duration",
                "Time to pull one image, all attempts included",
                Unit::Seconds,
                || Histogram::new(exponential_buckets(0.1, 2.0, 15)),
            ),
            pulled_bytes: registry.add_with_unit(
                "pulled",
                "Bytes downloaded by pulls, where the runtime reports them",
                Unit::Bytes,
                Family::default(),
            ),
            images_desired: registry.gauge("images_desired", "Images the sources name"),
            images_present: registry.gauge(
                "images_present",
                "Desired images present on the node after the last cycle",
            ),
            fetches: registry.counters("fetch", "Reads of the image list by result"),
            digest_checks: registry.counters(
                "digest_checks",
                "Always: manifest HEADs by result (unchanged, changed, error)",
            ),
            last_cycle: registry.add(
                "last_successful_cycle_timestamp_seconds",
                "Unix time of the last cycle that completed",
                Gauge::<f64, AtomicU64>::default(),
            ),
            registry,
        }
    }
}

impl Metrics {
    /// The metrics of an agent pulling through `runtime`: every known label set of its counters
    /// and histograms is there at zero from the start, so alerts have a series to read before
    /// the first pull.
    pub fn for_runtime(runtime: &str) -> Self {
        let m = Self::default();
        let results = PULL_RESULTS
            .into_iter()
            .chain(ErrorKind::ALL.map(ErrorKind::as_str));
        preset(
            &m.pulls,
            results.map(|result| PullLabels::new(runtime.to_owned(), result.to_owned())),
        );
        let labels = [RuntimeLabels::new(runtime.to_owned())];
        preset(&m.pull_duration, labels.clone());
        preset(&m.pulled_bytes, labels);
        let fetch = |result: &str| FetchLabels::new(result.to_owned());
        preset(&m.fetches, FETCH_RESULTS.map(fetch));
        preset(&m.digest_checks, DIGEST_CHECK_RESULTS.map(fetch));
        m
    }

    pub fn record_pull(&self, runtime: &str, result: &str, elapsed: Duration, bytes: Option<u64>) {
        self.pulls
            .get_or_create(&PullLabels::new(runtime.to_owned(), result.to_owned()))
            .inc();
        let labels = RuntimeLabels::new(runtime.to_owned());
        if result == "pulled" {
            self.pull_duration
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
        }
        if let Some(bytes) = bytes {
            self.pulled_bytes.get_or_create(&labels).inc_by(bytes);
        }
    }

    pub fn record_fetch(&self, result: &str) {
        self.fetches
            .get_or_create(&FetchLabels::new(result.to_owned()))
            .inc();
    }

    pub fn record_digest_check(&self, result: &str) {
        self.digest_checks
            .get_or_create(&FetchLabels::new(result.to_owned()))
            .inc();
    }

    pub fn record_cycle(&self, desired: usize, present: usize) {
        self.images_desired.set(desired as i64);
        self.images_present.set(present as i64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.last_cycle.set(now);
    }

    /// Current value of `kip_images_present`, for tests and logs.
    pub fn images_present(&self) -> i64 {
        self.images_present.get()
    }

    #[doc(hidden)]
    pub fn last_cycle_timestamp(&self) -> f64 {
        f64::from_bits(self.last_cycle.inner().load(Ordering::Relaxed))
    }
}

impl Exposition for Metrics {
    fn encode(&self) -> String {
        self.registry.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::default();
        m.record_pull("cri", "pulled", Duration::from_millis(1500), Some(1024));
        m.record_pull("cri", "not_found", Duration::from_millis(10), None);
        m.record_fetch("ok");
        m.record_fetch("not_modified");
        m.record_cycle(3, 2);
        let text = m.encode();
        for needle in [
            "kip_pulls_total{runtime=\"cri\",result=\"pulled\"} 1",
            "kip_pulls_total{runtime=\"cri\",result=\"not_found\"} 1",
            "kip_pull_duration_seconds_count{runtime=\"cri\"} 1",
            "kip_pulled_bytes_total{runtime=\"cri\"} 1024",
            "kip_images_desired 3",
            "kip_images_present 2",
            "kip_fetch_total{result=\"not_modified\"} 1",
            "kip_last_successful_cycle_timestamp_seconds ",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(m.last_cycle_timestamp() > 1.7e9);
    }

    #[test]
    fn every_known_series_starts_at_zero() {
        let text = Metrics::for_runtime("containerd").encode();
        for result in [
            "pulled",
            "cancelled",
            "not_found",
            "unauthorized",
            "unavailable",
            "timeout",
            "skipped_disk_pressure",
            "error",
        ] {
            let needle = format!("kip_pulls_total{{runtime=\"containerd\",result=\"{result}\"}} 0");
            assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
        }
        for needle in [
            "kip_pull_duration_seconds_count{runtime=\"containerd\"} 0",
            "kip_pulled_bytes_total{runtime=\"containerd\"} 0",
            "kip_fetch_total{result=\"ok\"} 0",
            "kip_fetch_total{result=\"not_modified\"} 0",
            "kip_fetch_total{result=\"error\"} 0",
            "kip_digest_checks_total{result=\"unchanged\"} 0",
            "kip_digest_checks_total{result=\"changed\"} 0",
            "kip_digest_checks_total{result=\"error\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
