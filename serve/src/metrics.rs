//! Writers for the figures a Prometheus collector reads at scrape time: one
//! constant gauge or counter each; and `build_info`, the one series the node
//! and the proxy export under the same name. A leaf: the node's store and
//! WAL collectors and the proxy's upstream collector all use it.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Registers `build_info{version}` (always 1) in `r`: `distcache_build_info`
/// in the node's registry, and in the proxy's through a registry of its own
/// prefixed `distcache`, so both processes export the same series.
pub fn register_build_info(r: &mut Registry) {
    let info = Family::<VersionLabel, Gauge>::default();
    info.get_or_create(&VersionLabel {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    r.register(
        "build_info",
        "The running distcache version (always 1)",
        info,
    );
}

/// Writes one gauge with value `v` from a collector.
pub fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Writes one counter with value `v` from a collector.
pub fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}
