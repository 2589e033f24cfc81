//! Registration helpers for the Prometheus metrics each binary owns.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// What a metric family's labels must be.
pub trait LabelSet:
    EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static
{
}

impl<T> LabelSet for T where
    T: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static
{
}

/// A registry under one prefix (`kip_`, `gateway_`) that hands out registered metrics.
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    /// An empty registry whose metric names start with `prefix_`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            registry: Registry::with_prefix(prefix),
        }
    }

    /// A counter family (exported as `<prefix>_<name>_total`).
    pub fn counters<L>(&mut self, name: &str, help: &str) -> Family<L, Counter>
    where
        L: LabelSet,
    {
        let family = Family::<L, Counter>::default();
        self.registry.register(name, help, family.clone());
        family
    }

    /// A counter family counting in `unit` (exported as `<prefix>_<name>_<unit>_total`).
    pub fn counters_with_unit<L>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
    ) -> Family<L, Counter>
    where
        L: LabelSet,
    {
        let family = Family::<L, Counter>::default();
        self.registry
            .register_with_unit(name, help, unit, family.clone());
        family
    }

    /// A histogram family; `new` builds each histogram (with its buckets).
    pub fn histograms<L>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        new: fn() -> Histogram,
    ) -> Family<L, Histogram>
    where
        L: LabelSet,
    {
        let family = Family::new_with_constructor(new);
        self.registry
            .register_with_unit(name, help, unit, family.clone());
        family
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.registry.register(name, help, gauge.clone());
        gauge
    }

    /// Registers a metric built by the caller.
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.register(name, help, metric);
    }

    /// The text exposition of every metric (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::exponential_buckets;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        kind: &'static str,
    }

    #[test]
    fn registered_metrics_are_encoded_under_the_prefix() {
        let mut m = MetricsRegistry::with_prefix("t");
        let c = m.counters::<Labels>("things", "Things");
        let h = m.histograms::<Labels>("wait", "Waits", Unit::Seconds, || {
            Histogram::new(exponential_buckets(1.0, 2.0, 3))
        });
        let g = m.gauge("level", "Level");
        c.get_or_create(&Labels { kind: "a" }).inc();
        h.get_or_create(&Labels { kind: "a" }).observe(1.5);
        g.set(3);
        let text = m.encode();
        for needle in [
            "t_things_total{kind=\"a\"} 1",
            "t_wait_seconds_count{kind=\"a\"} 1",
            "t_wait_seconds_bucket{le=\"2.0\",kind=\"a\"} 1",
            "t_level 3",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
