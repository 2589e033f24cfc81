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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayLabels {
    pub channel: &'static str,
    /// `to_kernel` or `to_client`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `legacy` or `v1`.
    pub protocol: &'static str,
}

/// Why messages are dropped (each series exists from the start, at zero).
pub const DROP_REASONS: [&str; 7] = [
    "client_queue_full",
    "offline_buffer_full",
    "offline_discarded",
    "bad_kernel_message",
    "bad_client_frame",
    "send_failed",
    "no_session",
];

const CHANNELS: [&str; 4] = ["shell", "control", "stdin", "iopub"];
const DIRECTIONS: [&str; 2] = ["to_kernel", "to_client"];

/// Every metric the gateway exports, under the `gateway_` prefix.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    kernelspecs: Gauge,
    watchers: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    kernels: Family<StateLabels, Gauge>,
    starts: Family<ResultLabels, Counter>,
    start_latency: Histogram,
    auto_restarts: Family<ResultLabels, Counter>,
    culls: Family<ReasonLabels, Counter>,
    websockets: Family<ProtocolLabels, Gauge>,
    /// Indexed by channel, then direction (no label lookup per message).
    relayed: Vec<Counter>,
    dropped: Family<ReasonLabels, Counter>,
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
        let kernels = Family::<StateLabels, Gauge>::default();
        registry.register("kernels", "Kernels by execution state", kernels.clone());
        let starts = Family::<ResultLabels, Counter>::default();
        registry.register("kernel_starts", "Kernel starts by result", starts.clone());
        let start_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "kernel_start_duration",
            "Time from POST /api/kernels to a running kernel",
            Unit::Seconds,
            start_latency.clone(),
        );
        let auto_restarts = Family::<ResultLabels, Counter>::default();
        registry.register(
            "kernel_auto_restarts",
            "Kernels that died on their own, by outcome (restarted, dead, shutdown)",
            auto_restarts.clone(),
        );
        let culls = Family::<ReasonLabels, Counter>::default();
        registry.register("kernels_culled", "Kernels culled, by reason", culls.clone());
        let websockets = Family::<ProtocolLabels, Gauge>::default();
        registry.register(
            "websocket_connections",
            "Kernel websockets open now, by protocol",
            websockets.clone(),
        );
        let relayed_family = Family::<RelayLabels, Counter>::default();
        registry.register(
            "messages_relayed",
            "Kernel messages relayed, by channel and direction",
            relayed_family.clone(),
        );
        let relayed = CHANNELS
            .iter()
            .flat_map(|channel| {
                DIRECTIONS.iter().map(|direction| {
                    relayed_family
                        .get_or_create(&RelayLabels { channel, direction })
                        .clone()
                })
            })
            .collect();
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "messages_dropped",
            "Kernel messages dropped, by reason",
            dropped.clone(),
        );
        for reason in DROP_REASONS {
            let _ = dropped.get_or_create(&ReasonLabels { reason });
        }
        for result in ["ok", "error"] {
            let _ = starts.get_or_create(&ResultLabels { result });
        }
        for result in ["restarted", "dead", "shutdown"] {
            let _ = auto_restarts.get_or_create(&ResultLabels { result });
        }
        for reason in ["idle", "dead"] {
            let _ = culls.get_or_create(&ReasonLabels { reason });
        }
        for protocol in ["legacy", "v1"] {
            let _ = websockets.get_or_create(&ProtocolLabels { protocol });
        }
        Self {
            registry,
            requests,
            latency,
            kernelspecs,
            watchers,
            reloads,
            kernels,
            starts,
            start_latency,
            auto_restarts,
            culls,
            websockets,
            relayed,
            dropped,
        }
    }

    /// Replaces the kernels-by-state gauges (states no kernel is in read 0).
    pub fn set_kernels(&self, by_state: &std::collections::BTreeMap<String, i64>) {
        for state in ["starting", "idle", "busy", "restarting", "dead"] {
            self.kernels
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(by_state.get(state).copied().unwrap_or(0));
        }
        for (state, n) in by_state {
            self.kernels
                .get_or_create(&StateLabels {
                    state: state.clone(),
                })
                .set(*n);
        }
    }

    pub fn record_start(&self, result: &'static str, seconds: f64) {
        self.starts.get_or_create(&ResultLabels { result }).inc();
        if result == "ok" {
            self.start_latency.observe(seconds);
        }
    }

    pub fn record_auto_restart(&self, result: &'static str) {
        self.auto_restarts
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn record_cull(&self, reason: &'static str) {
        self.culls.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a websocket while the guard lives.
    pub fn websocket(&self, protocol: &'static str) -> GaugeGuard {
        let g = self
            .websockets
            .get_or_create(&ProtocolLabels { protocol })
            .clone();
        g.inc();
        GaugeGuard(g)
    }

    pub fn relayed(&self, channel: gateway_core::Channel, direction: &'static str) {
        let c = CHANNELS
            .iter()
            .position(|c| *c == channel.as_str())
            .unwrap_or(0);
        let d = usize::from(direction == "to_client");
        self.relayed[c * 2 + d].inc();
    }

    pub fn dropped(&self, reason: &'static str) {
        self.dropped_n(reason, 1);
    }

    pub fn dropped_n(&self, reason: &'static str, n: u64) {
        self.dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n);
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

/// Decrements a gauge when dropped.
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
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
