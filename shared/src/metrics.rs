//! Registration helpers for the Prometheus metrics each binary owns, and the metric types they
//! hand out.

use prometheus_client::registry::{Metric, Registry};
pub use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Unit,
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

/// Declares label sets: structs with every field public, the derives a metric family's labels
/// need (`Clone`, `Debug`, `Hash`, `PartialEq`, `Eq`, `EncodeLabelSet`) and a `new` taking the
/// fields in order. The expansion names `prometheus_client`, which the caller depends on.
#[macro_export]
macro_rules! label_sets {
    ($(
        $(#[$attr:meta])*
        $vis:vis struct $name:ident { $($(#[$field_attr:meta])* $field:ident: $ty:ty),* $(,)? }
    )*) => {
        $(
            $(#[$attr])*
            #[derive(Clone, Debug, Hash, PartialEq, Eq, $crate::metrics::EncodeLabelSet)]
            $vis struct $name { $($(#[$field_attr])* pub $field: $ty,)* }

            impl $name {
                #[allow(dead_code)]
                $vis fn new($($field: $ty),*) -> Self {
                    Self { $($field),* }
                }
            }
        )*
    };
}

/// Creates the series of `labels` in `family`, at zero, so that they are exported before their
/// first event.
pub fn preset<L, M, C>(family: &Family<L, M, C>, labels: impl IntoIterator<Item = L>)
where
    L: LabelSet,
    C: MetricConstructor<M>,
{
    for label in labels {
        drop(family.get_or_create(&label));
    }
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

    /// `metric`, registered (exported as `<prefix>_<name>`, a counter's with `_total`).
    pub fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.registry.register(name, help, metric.clone());
        metric
    }

    /// `metric`, registered as measuring in `unit` (exported as `<prefix>_<name>_<unit>`, a
    /// counter's with `_total`).
    pub fn add_with_unit<M: Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: M,
    ) -> M {
        self.registry
            .register_with_unit(name, help, unit, metric.clone());
        metric
    }

    /// A counter family (exported as `<prefix>_<name>_total`).
    pub fn counters<L: LabelSet>(&mut self, name: &str, help: &str) -> Family<L, Counter> {
        self.add(name, help, Family::default())
    }

    /// A gauge family.
    pub fn gauges<L: LabelSet>(&mut self, name: &str, help: &str) -> Family<L, Gauge> {
        self.add(name, help, Family::default())
    }

    /// A histogram family; `new` builds each histogram (with its buckets).
    pub fn histograms<L: LabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        new: fn() -> Histogram,
    ) -> Family<L, Histogram> {
        self.add_with_unit(name, help, unit, Family::new_with_constructor(new))
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        self.add(name, help, Gauge::default())
    }
}

/// What the admin endpoint's `/metrics` serves: a binary's metrics, or a bare registry.
pub trait Exposition: Send + Sync + 'static {
    /// The text exposition of every metric (OpenMetrics).
    fn encode(&self) -> String;
}

impl Exposition for MetricsRegistry {
    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::label_sets! {
        struct Labels { kind: &'static str }
    }

    #[test]
    fn registered_metrics_are_encoded_under_the_prefix() {
        let mut m = MetricsRegistry::with_prefix("t");
        let c = m.counters::<Labels>("things", "Things");
        let h = m.histograms::<Labels>("wait", "Waits", Unit::Seconds, || {
            Histogram::new(exponential_buckets(1.0, 2.0, 3))
        });
        let g = m.gauge("level", "Level");
        let gs = m.gauges::<Labels>("levels", "Levels");
        let one = m.add_with_unit(
            "start",
            "Starts",
            Unit::Seconds,
            Histogram::new(exponential_buckets(1.0, 2.0, 3)),
        );
        let bytes = m.add_with_unit("sent", "Bytes sent", Unit::Bytes, Counter::<u64>::default());
        c.get_or_create(&Labels { kind: "a" }).inc();
        h.get_or_create(&Labels { kind: "a" }).observe(1.5);
        g.set(3);
        gs.get_or_create(&Labels { kind: "b" }).set(4);
        one.observe(3.0);
        bytes.inc_by(7);
        preset(&c, ["b", "c"].map(Labels::new));
        preset(&h, [Labels::new("z")]);
        let text = m.encode();
        for needle in [
            "t_things_total{kind=\"a\"} 1",
            "t_things_total{kind=\"b\"} 0",
            "t_things_total{kind=\"c\"} 0",
            "t_wait_seconds_count{kind=\"z\"} 0",
            "t_wait_seconds_count{kind=\"a\"} 1",
            "t_wait_seconds_bucket{le=\"2.0\",kind=\"a\"} 1",
            "t_level 3",
            "t_levels{kind=\"b\"} 4",
            "t_start_seconds_bucket{le=\"2.0\"} 0",
            "t_start_seconds_bucket{le=\"4.0\"} 1",
            "t_sent_bytes_total 7",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
