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
    /// Garbage collection counters, shared with the collector that updates them.
    pub gc: std::sync::Arc<crate::gc::GcStats>,
    /// Scrub counters, shared with the scrubber that updates them.
    pub scrub: std::sync::Arc<crate::scrub::ScrubStats>,
    /// Webhook counters, when `[[webhook]]` endpoints are configured.
    pub events: Option<std::sync::Arc<crate::events::EventStats>>,
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
        out.push_str(
            "# HELP wharf_blob_sendfile_bytes_total Blob bytes sent with sendfile(2), not copied through user space.\n",
        );
        out.push_str("# TYPE wharf_blob_sendfile_bytes_total counter\n");
        let _ = writeln!(out, "wharf_blob_sendfile_bytes_total {}", crate::zero_copy::sendfile_bytes());
        out.push_str(
            "# HELP wharf_s3_requests_total Requests to the S3 object store by kind (0 on the filesystem store).\n",
        );
        out.push_str("# TYPE wharf_s3_requests_total counter\n");
        for (op, n) in crate::store::s3::request_counts() {
            let _ = writeln!(out, "wharf_s3_requests_total{{op=\"{op}\"}} {n}");
        }
        let gc = &self.gc;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let gc_counters = [
            ("wharf_gc_runs_total", "Garbage collections finished (dry runs included).", load(&gc.runs)),
            ("wharf_gc_manifests_deleted_total", "Unreachable manifests deleted.", load(&gc.manifests_deleted)),
            ("wharf_gc_links_deleted_total", "Unneeded blob links deleted.", load(&gc.links_deleted)),
            ("wharf_gc_blobs_deleted_total", "Pool blobs deleted.", load(&gc.blobs_deleted)),
            ("wharf_gc_bytes_freed_total", "Bytes of pool blobs deleted.", load(&gc.bytes_freed)),
        ];
        for (name, help, v) in gc_counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let secs = load(&gc.last_duration_ms) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "# HELP wharf_gc_last_duration_seconds Wall time of the last garbage collection.\n\
             # TYPE wharf_gc_last_duration_seconds gauge\nwharf_gc_last_duration_seconds {secs}"
        );
        let scrub = &self.scrub;
        let scrub_counters = [
            ("wharf_scrub_runs_total", "Scrub passes finished.", load(&scrub.runs)),
            (
                "wharf_scrub_objects_checked_total",
                "Stored objects re-hashed by the scrub.",
                load(&scrub.objects_checked),
            ),
            ("wharf_scrub_bytes_checked_total", "Bytes re-hashed by the scrub.", load(&scrub.bytes_checked)),
            ("wharf_scrub_corrupt_found_total", "Corrupt objects found and quarantined.", load(&scrub.corrupt_found)),
        ];
        for (name, help, v) in scrub_counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        if let Some(ev) = &self.events {
            type PerEndpoint = fn(&crate::events::EventStats) -> &Vec<std::sync::atomic::AtomicU64>;
            let per_endpoint: [(&str, &str, PerEndpoint); 3] = [
                ("wharf_events_delivered_total", "Events delivered to a webhook (2xx answers).", |s| &s.delivered),
                ("wharf_events_failed_total", "Failed webhook delivery attempts (retried later).", |s| &s.failed),
                ("wharf_events_expired_total", "Events given up after give_up_after.", |s| &s.expired),
            ];
            for (name, help, get) in per_endpoint {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (endpoint, v) in ev.endpoints.iter().zip(get(ev)) {
                    let _ = writeln!(out, "{name}{{endpoint=\"{}\"}} {}", endpoint.replace(['"', '\\'], "_"), load(v));
                }
            }
            let _ = writeln!(
                out,
                "# HELP wharf_events_dropped_total Events dropped before they were kept (queue full).\n\
                 # TYPE wharf_events_dropped_total counter\nwharf_events_dropped_total {}\n\
                 # HELP wharf_events_pending Undelivered events waiting in the store.\n\
                 # TYPE wharf_events_pending gauge\nwharf_events_pending {}",
                load(&ev.dropped),
                load(&ev.pending)
            );
        }
        let series: [Series; 10] = [
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
            ("wharf_mirror_evictions_total", "Cached images evicted by the cache budget.", |u| u.evictions),
            ("wharf_mirror_evicted_bytes_total", "Bytes evicted from the mirror cache by its budget.", |u| {
                u.bytes_evicted
            }),
        ];
        for (name, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for u in upstreams {
                let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {}", u.name, get(u));
            }
        }
        let _ = writeln!(
            out,
            "# HELP wharf_mirror_cache_bytes Bytes of blobs linked from the upstream's cache repositories (last budget pass).\n\
             # TYPE wharf_mirror_cache_bytes gauge"
        );
        for u in upstreams {
            let _ = writeln!(out, "wharf_mirror_cache_bytes{{upstream=\"{}\"}} {}", u.name, u.cache_bytes);
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
        m.gc.bytes_freed.fetch_add(42, std::sync::atomic::Ordering::Relaxed);
        let text = m.render(&[]);
        assert!(text.contains("wharf_requests_total{endpoint=\"blob_get\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("wharf_gc_bytes_freed_total 42\n"), "{text}");
        assert!(text.contains("wharf_gc_runs_total 0\n"), "{text}");
        m.scrub.corrupt_found.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let text = m.render(&[]);
        assert!(text.contains("wharf_scrub_corrupt_found_total 2\n"), "{text}");
        assert!(text.contains("wharf_scrub_bytes_checked_total 0\n"), "{text}");
    }
}
