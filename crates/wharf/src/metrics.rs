//! Request and mirror counters, exported in the Prometheus text format on `GET /metrics`.
//! Labels are endpoint names, status codes and upstream names — never raw paths or repository names.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::mirror::UpstreamStatus;

/// A mirror counter: metric name, help text, and how to read it from a status.
type Series = (&'static str, &'static str, fn(&UpstreamStatus) -> u64);

/// Counters owned by the application.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Metrics {
    /// Count one answered request.
    pub fn record(&self, endpoint: &'static str, status: u16) {
        *self.requests.lock().expect("metrics lock").entry((endpoint, status)).or_default() += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self, upstreams: &[UpstreamStatus]) -> String {
        let mut out = String::new();
        out.push_str("# HELP wharf_requests_total Registry API requests by endpoint and status.\n");
        out.push_str("# TYPE wharf_requests_total counter\n");
        for ((endpoint, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "wharf_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
        }
        let series: [Series; 8] = [
            ("wharf_mirror_hits_total", "Mirrored reads answered from the cache.", |u| u.hits),
            ("wharf_mirror_misses_total", "Mirrored reads fetched from the upstream.", |u| u.misses),
            ("wharf_mirror_stale_served_total", "Cached manifests served because the upstream failed.", |u| {
                u.stale_served
            }),
            ("wharf_mirror_not_found_total", "Upstream not-found answers.", |u| u.not_found),
            ("wharf_mirror_errors_total", "Upstream failures.", |u| u.errors),
            ("wharf_mirror_corrupt_total", "Fetched content discarded for a digest mismatch.", |u| u.corrupt),
            ("wharf_mirror_fetched_bytes_total", "Blob bytes fetched from the upstream.", |u| u.bytes_fetched),
            ("wharf_mirror_blob_fills_total", "Blob fetches started (one per digest).", |u| u.blob_fills),
        ];
        for (name, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for u in upstreams {
                let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {}", u.name, get(u));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.record("blob_get", 200);
        m.record("blob_get", 200);
        m.record("blob_get", 404);
        let text = m.render(&[]);
        assert!(text.contains("wharf_requests_total{endpoint=\"blob_get\",status=\"200\"} 2"), "{text}");
    }
}
