//! Prometheus metrics, owned by the application and passed to whoever records them.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern (e.g. `/api/kernelspecs/{name}`), or `other`.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `changed` or `unchanged`.
    pub result: &'static str,
}

/// Every metric the gateway exports, under the `gateway_` prefix.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    kernelspecs: Gauge,
    watchers: Gauge,
    reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        // 50 µs … ~1.6 s; held watches land in the top bucket and +Inf.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route (watches included)",
            Unit::Seconds,
            latency.clone(),
        );
        let kernelspecs = Gauge::default();
        registry.register(
            "kernelspecs",
            "Kernelspecs in the listing served",
            kernelspecs.clone(),
        );
        let watchers = Gauge::default();
        registry.register("watchers", "Watch requests held open now", watchers.clone());
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "kernelspec_rescans",
            "Rescans of the kernelspec directories, by result",
            reloads.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            kernelspecs,
            watchers,
            reloads,
        }
    }

    pub fn record_request(&self, route: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    pub fn set_kernelspecs(&self, n: usize) {
        self.kernelspecs.set(n as i64);
    }

    pub fn record_reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Counts a held watch until the guard drops.
    pub fn watcher(&self) -> WatcherGuard<'_> {
        self.watchers.inc();
        WatcherGuard(&self.watchers)
    }

    pub fn watchers(&self) -> i64 {
        self.watchers.get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Decrements the watcher gauge when dropped (also when the client goes away mid-wait).
pub struct WatcherGuard<'a>(&'a Gauge);

impl Drop for WatcherGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::new();
        m.record_request("/api/kernelspecs", 200, 0.0002);
        m.record_request("/api/kernelspecs", 304, 0.0001);
        m.set_kernelspecs(3);
        m.record_reload("changed");
        let guard = m.watcher();
        let text = m.encode();
        for needle in [
            "gateway_http_requests_total{route=\"/api/kernelspecs\",status=\"200\"} 1",
            "gateway_http_requests_total{route=\"/api/kernelspecs\",status=\"304\"} 1",
            "gateway_http_request_duration_seconds_count{route=\"/api/kernelspecs\"} 2",
            "gateway_kernelspecs 3",
            "gateway_watchers 1",
            "gateway_kernelspec_rescans_total{result=\"changed\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        drop(guard);
        assert_eq!(m.watchers(), 0);
    }
}
