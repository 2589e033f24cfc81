//! Prometheus metrics, owned by the application and passed to whoever records them.

use eg_common::metrics::{
    Counter, Exposition, Family, Gauge, Histogram, MetricsRegistry, Unit, exponential_buckets,
    preset,
};

eg_common::label_sets! {
    pub struct RequestLabels {
        /// The matched route pattern (e.g. `/api/kernelspecs/{name}`), or `other`.
        route: &'static str,
        status: u16,
    }

    pub struct RouteLabels { route: &'static str }

    pub struct StateLabels { state: String }

    pub struct ResultLabels { result: &'static str }

    pub struct RelayLabels {
        channel: &'static str,
        /// `to_kernel` or `to_client`.
        direction: &'static str,
    }

    pub struct ReasonLabels { reason: &'static str }

    pub struct ProtocolLabels {
        /// `legacy` or `v1`.
        protocol: &'static str,
    }

    pub struct PhaseLabels { phase: &'static str }

    pub struct VerbLabels { verb: &'static str }
}

/// Why messages are dropped (each series exists from the start, at zero).
pub const DROP_REASONS: [&str; 6] = [
    "client_queue_full",
    "offline_buffer_full",
    "offline_discarded",
    "bad_kernel_message",
    "bad_client_frame",
    "no_session",
];

/// Phases of a kernel pod's launch, timed from the start of the launch.
pub const LAUNCH_PHASES: [&str; 3] = ["scheduled", "running", "handshake"];

/// Why a kernel pod's launch failed (each series exists from the start, at zero).
pub const LAUNCH_FAILURES: [&str; 10] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "Unschedulable",
    "PodFailed",
    "Timeout",
    "ApiError",
    "Rejected",
];

/// Kubernetes API verbs the gateway uses (each series exists from the start, at zero).
pub const KUBE_VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
    "other",
];

const CHANNELS: [&str; 4] = ["shell", "control", "stdin", "iopub"];
const DIRECTIONS: [&str; 2] = ["to_kernel", "to_client"];

/// Every metric the gateway exports, under the `gateway_` prefix.
pub struct Metrics {
    registry: MetricsRegistry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    kernelspecs: Gauge,
    watchers: Gauge,
    /// By `changed` or `unchanged`.
    reloads: Family<ResultLabels, Counter>,
    kernels: Family<StateLabels, Gauge>,
    starts: Family<ResultLabels, Counter>,
    start_latency: Histogram,
    auto_restarts: Family<ResultLabels, Counter>,
    culls: Family<ReasonLabels, Counter>,
    websockets: Family<ProtocolLabels, Gauge>,
    kernel_sockets: Gauge,
    /// Indexed by channel, then direction (no label lookup per message).
    relayed: Vec<Counter>,
    dropped: Family<ReasonLabels, Counter>,
    launch_phases: Family<PhaseLabels, Histogram>,
    launch_failures: Family<ReasonLabels, Counter>,
    kube_requests: Family<VerbLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = MetricsRegistry::with_prefix("gateway");
        let m = Self {
            requests: registry.counters("http_requests", "HTTP requests by route and status"),
            // 50 µs … ~1.6 s; held watches land in the top bucket and +Inf.
            latency: registry.histograms(
                "http_request_duration",
                "Time to answer an HTTP request, by route (watches included)",
                Unit::Seconds,
                || Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            ),
            kernelspecs: registry.gauge("kernelspecs", "Kernelspecs in the listing served"),
            watchers: registry.gauge("watchers", "Watch requests held open now"),
            reloads: registry.counters(
                "kernelspec_rescans",
                "Rescans of the kernelspec directories, by result",
            ),
            kernels: registry.gauges("kernels", "Kernels by execution state"),
            starts: registry.counters("kernel_starts", "Kernel starts by result"),
            start_latency: registry.add_with_unit(
                "kernel_start_duration",
                "Time from POST /api/kernels to a running kernel",
                Unit::Seconds,
                Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            ),
            auto_restarts: registry.counters(
                "kernel_auto_restarts",
                "Kernels that died on their own, by outcome (restarted, dead, shutdown)",
            ),
            culls: registry.counters("kernels_culled", "Kernels culled, by reason"),
            websockets: registry.gauges(
                "websocket_connections",
                "Kernel websockets open now, by protocol",
            ),
            kernel_sockets: registry.gauge(
                "kernel_sockets",
                "ZeroMQ sockets open to kernels (IOPub, each session's shell, control and stdin, \
                 the gateway's own while it talks to a kernel)",
            ),
            relayed: by_channel_and_direction(&registry.counters(
                "messages_relayed",
                "Kernel messages relayed, by channel and direction",
            )),
            dropped: registry.counters("messages_dropped", "Kernel messages dropped, by reason"),
            launch_phases: registry.histograms(
                "kernel_pod_launch_phase_duration",
                "Time from the start of a kernel pod's launch to each phase (scheduled, running, \
                 handshake: connection info received)",
                Unit::Seconds,
                || Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            ),
            launch_failures: registry.counters(
                "kernel_pod_launch_failures",
                "Kernel pod launches that failed, by reason",
            ),
            kube_requests: registry.counters(
                "kubernetes_api_requests",
                "Requests to the Kubernetes API, by verb",
            ),
            registry,
        };
        preset(&m.dropped, DROP_REASONS.map(ReasonLabels::new));
        preset(&m.starts, ["ok", "error"].map(ResultLabels::new));
        preset(&m.launch_phases, LAUNCH_PHASES.map(PhaseLabels::new));
        preset(&m.launch_failures, LAUNCH_FAILURES.map(ReasonLabels::new));
        preset(&m.kube_requests, KUBE_VERBS.map(VerbLabels::new));
        preset(
            &m.auto_restarts,
            ["restarted", "dead", "shutdown"].map(ResultLabels::new),
        );
        preset(&m.culls, ["idle", "dead"].map(ReasonLabels::new));
        preset(&m.websockets, ["legacy", "v1"].map(ProtocolLabels::new));
        m
    }
}

/// The relay counters, indexed by channel, then direction (no label lookup per message).
fn by_channel_and_direction(family: &Family<RelayLabels, Counter>) -> Vec<Counter> {
    CHANNELS
        .iter()
        .flat_map(|channel| {
            DIRECTIONS.iter().map(|direction| {
                family
                    .get_or_create(&RelayLabels { channel, direction })
                    .clone()
            })
        })
        .collect()
}

impl Metrics {
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

    pub fn record_launch_phase(&self, phase: &'static str, seconds: f64) {
        self.launch_phases
            .get_or_create(&PhaseLabels { phase })
            .observe(seconds);
    }

    /// A failed kernel pod launch; reasons outside [`LAUNCH_FAILURES`] count as `PodFailed`.
    pub fn record_launch_failure(&self, reason: &str) {
        let reason = LAUNCH_FAILURES
            .iter()
            .find(|r| **r == reason)
            .copied()
            .unwrap_or("PodFailed");
        self.launch_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn kube_request(&self, verb: &'static str) {
        self.kube_requests.get_or_create(&VerbLabels { verb }).inc();
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

    /// Counts a ZeroMQ socket to a kernel while the guard lives.
    pub fn kernel_socket(&self) -> GaugeGuard {
        self.kernel_sockets.inc();
        GaugeGuard(self.kernel_sockets.clone())
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
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a held watch until the guard drops.
    pub fn watcher(&self) -> WatcherGuard<'_> {
        self.watchers.inc();
        WatcherGuard(&self.watchers)
    }

    pub fn watchers(&self) -> i64 {
        self.watchers.get()
    }
}

impl Exposition for Metrics {
    fn encode(&self) -> String {
        self.registry.encode()
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
        let m = Metrics::default();
        m.record_request("/api/kernelspecs", 200, 0.0002);
        m.record_request("/api/kernelspecs", 304, 0.0001);
        m.set_kernelspecs(3);
        m.record_reload("changed");
        let guard = m.watcher();
        let sockets = [m.kernel_socket(), m.kernel_socket()];
        let text = m.encode();
        for needle in [
            "gateway_http_requests_total{route=\"/api/kernelspecs\",status=\"200\"} 1",
            "gateway_http_requests_total{route=\"/api/kernelspecs\",status=\"304\"} 1",
            "gateway_http_request_duration_seconds_count{route=\"/api/kernelspecs\"} 2",
            "gateway_kernelspecs 3",
            "gateway_watchers 1",
            "gateway_kernelspec_rescans_total{result=\"changed\"} 1",
            "gateway_kernel_sockets 2",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        drop(guard);
        assert_eq!(m.watchers(), 0);
        drop(sockets);
        assert!(m.encode().contains("gateway_kernel_sockets 0"));
    }
}
