//! Events for other systems: webhooks (`[[webhook]]`) receive CloudEvents 1.0 JSON (structured mode) on push,
//! tag move, delete, mirror fill, sync result and conflict, garbage collection and scrub findings.
//!
//! Emitting never waits: [`Events::emit`] hands the event to a bounded channel ([`CHANNEL`]; a full channel
//! drops it and counts `wharf_events_dropped_total`). A writer task keeps each event that some endpoint wants as
//! a meta document `events/pending/<ms>-<seq>` listing the endpoints still owed it, so events survive a
//! restart; the delivery task POSTs them, signs each body with the endpoint's HMAC-SHA256 key
//! (`X-Wharf-Signature: sha256=<hex>`), retries with exponential backoff per endpoint, and removes the
//! document once every endpoint has it. Delivery is at least once: receivers deduplicate by the CloudEvents
//! `id`. At most [`MAX_PENDING`] documents are kept; past that new events are dropped and counted.
//!
//! May import: `store`, `config`, `policy`, `history`, `oci`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use crate::access_log::now_ms;
use crate::config::events::WebhookConfig;
use crate::config::sync::parse_duration;
use crate::policy::events::Filter;
use crate::store::{ContentStore, StoreError};

/// Events waiting for the writer task, at most.
pub const CHANNEL: usize = 4096;
/// Undelivered event documents kept, at most.
pub const MAX_PENDING: usize = 10_000;
const PREFIX: &str = "events/pending";

/// Something that happened, before it is addressed.
#[derive(Debug, Clone)]
pub struct Event {
    /// Type without the `io.wharf.` prefix (`tag.moved`).
    pub kind: &'static str,
    /// The repository it concerns, if any (for filters and the CloudEvents `subject`).
    pub repository: Option<String>,
    /// The CloudEvents `subject` (`team/app:v1`), default the repository.
    pub subject: Option<String>,
    /// The payload.
    pub data: serde_json::Value,
}

impl Event {
    /// An event about `repository`.
    pub fn about(kind: &'static str, repository: &str, subject: Option<String>, data: serde_json::Value) -> Event {
        Event { kind, repository: Some(repository.to_owned()), subject, data }
    }

    /// An event about the registry as a whole.
    pub fn global(kind: &'static str, data: serde_json::Value) -> Event {
        Event { kind, repository: None, subject: None, data }
    }
}

/// Counters for `/metrics`, per endpoint in configuration order.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Endpoint names.
    pub endpoints: Vec<String>,
    /// Events delivered (2xx), per endpoint.
    pub delivered: Vec<AtomicU64>,
    /// Failed attempts (connection errors, non-2xx, timeouts), per endpoint.
    pub failed: Vec<AtomicU64>,
    /// Events given up after `give_up_after`, per endpoint.
    pub expired: Vec<AtomicU64>,
    /// Events dropped before they were kept (channel or queue full).
    pub dropped: AtomicU64,
    /// Event documents waiting, as last seen by the delivery task.
    pub pending: AtomicU64,
}

/// A cheap handle for emitting; a registry without webhooks holds a disabled one.
#[derive(Clone, Default)]
pub struct Events {
    tx: Option<mpsc::Sender<Event>>,
    stats: Option<Arc<EventStats>>,
}

impl Events {
    /// Hand an event over (never waits).
    pub fn emit(&self, e: Event) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(e).is_err() {
            if let Some(s) = &self.stats {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!("event dropped: the event queue is full");
        }
    }

    /// Whether anything listens (callers skip building costly payloads otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }
}

/// One configured endpoint, ready to send.
struct Endpoint {
    name: String,
    url: String,
    key: Option<ring::hmac::Key>,
    filter: Filter,
    timeout: Duration,
    retry_max: Duration,
    give_up_after: Duration,
}

/// An event kept until every endpoint has it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// The CloudEvent, exactly as sent.
    event: serde_json::Value,
    /// When it was kept (ms).
    created_ms: u64,
    /// Endpoints still owed it.
    owed: Vec<Owed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Owed {
    endpoint: String,
    attempts: u32,
    next_ms: u64,
}

/// The webhook machinery of one `serve` process.
pub struct Webhooks {
    store: Arc<dyn ContentStore>,
    endpoints: Vec<Endpoint>,
    stats: Arc<EventStats>,
    http: reqwest::Client,
    source: String,
    wake: Notify,
    seq: AtomicU64,
    /// When each kept document is next due (ms), as this process last wrote it: a pass skips documents that
    /// are not due without reading them. At most [`MAX_PENDING`] entries (one per document).
    due: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Webhooks {
    /// Endpoints from `[[webhook]]` (None when there are none); `source` is the CloudEvents `source`
    /// (`wharf://host:port`).
    pub fn from_config(
        store: Arc<dyn ContentStore>,
        configs: &[WebhookConfig],
        source: String,
    ) -> Result<Option<Arc<Webhooks>>, String> {
        if configs.is_empty() {
            return Ok(None);
        }
        let mut endpoints = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let key = |k: &str| format!("webhook[{i}].{k}");
            let secret = match (&c.secret, &c.secret_file) {
                (Some(s), _) => Some(s.trim().to_owned()),
                (None, Some(p)) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("{}: {}: {e}", key("secret_file"), p.display()))?
                        .trim()
                        .to_owned(),
                ),
                (None, None) => None,
            };
            let dur = |k: &str, v: &Option<String>, d: Duration| match v {
                Some(v) => parse_duration(v).map_err(|e| format!("{}: {e}", key(k))),
                None => Ok(d),
            };
            endpoints.push(Endpoint {
                name: c.display_name(),
                url: c.url.clone(),
                key: secret.map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.as_bytes())),
                filter: Filter::new(&c.events, &c.repositories).map_err(|e| format!("{}: {e}", key("repositories")))?,
                timeout: dur("timeout", &c.timeout, Duration::from_secs(10))?,
                retry_max: dur("retry_max", &c.retry_max, Duration::from_secs(300))?,
                give_up_after: dur("give_up_after", &c.give_up_after, Duration::from_secs(86_400))?,
            });
        }
        let n = endpoints.len();
        let stats = EventStats {
            endpoints: endpoints.iter().map(|e| e.name.clone()).collect(),
            delivered: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failed: (0..n).map(|_| AtomicU64::new(0)).collect(),
            expired: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ..EventStats::default()
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(Some(Arc::new(Webhooks {
            store,
            endpoints,
            stats: Arc::new(stats),
            http,
            source,
            wake: Notify::new(),
            seq: AtomicU64::new(0),
            due: std::sync::Mutex::new(std::collections::HashMap::new()),
        })))
    }

    /// The counters for `/metrics`.
    pub fn stats(&self) -> &Arc<EventStats> {
        &self.stats
    }

    /// The handle to emit with, and the receiving end [`Webhooks::start`] consumes.
    pub fn channel(&self) -> (Events, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel::<Event>(CHANNEL);
        (Events { tx: Some(tx), stats: Some(self.stats.clone()) }, rx)
    }

    /// Start the writer and delivery tasks over what [`Webhooks::channel`] receives.
    pub fn start(self: &Arc<Self>, set: &mut tokio::task::JoinSet<()>, mut rx: mpsc::Receiver<Event>) {
        let me = self.clone();
        set.spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Err(err) = me.keep(e).await {
                    me.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, "event dropped: it could not be kept in the store");
                }
            }
        });
        let me = self.clone();
        set.spawn(async move { me.deliver_loop().await });
    }

    /// Address an event and keep it (nothing is kept when no endpoint wants it).
    async fn keep(&self, e: Event) -> Result<(), StoreError> {
        let owed: Vec<Owed> = self
            .endpoints
            .iter()
            .filter(|ep| ep.filter.wants(e.kind, e.repository.as_deref()))
            .map(|ep| Owed { endpoint: ep.name.clone(), attempts: 0, next_ms: 0 })
            .collect();
        if owed.is_empty() {
            return Ok(());
        }
        if self.stats.pending.load(Ordering::Relaxed) as usize >= MAX_PENDING {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(kind = e.kind, "event dropped: {MAX_PENDING} undelivered events are waiting already");
            return Ok(());
        }
        let ms = now_ms();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut rnd = [0u8; 8];
        let _ = getrandom::getrandom(&mut rnd);
        let id = format!("{ms:013}-{seq}-{}", hex::encode(rnd));
        let mut ce = serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": self.source,
            "type": format!("io.wharf.{}", e.kind),
            "time": crate::history::rfc3339(ms / 1000),
            "datacontenttype": "application/json",
            "data": e.data,
        });
        if let Some(s) = e.subject.or(e.repository) {
            ce["subject"] = serde_json::Value::String(s);
        }
        let doc = Pending { event: ce, created_ms: ms, owed };
        let key = format!("{PREFIX}/{ms:013}-{seq:08}");
        self.store.meta_put(&key, Bytes::from(serde_json::to_vec(&doc).expect("events serialise"))).await?;
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    async fn deliver_loop(&self) {
        loop {
            let next = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "event delivery: reading the queue failed; retrying");
                    Some(Duration::from_secs(5))
                }
            };
            let wait = next.unwrap_or(Duration::from_secs(60)).min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A burst of new events wakes one pass, not one per event.
                _ = self.wake.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// One pass over the queue: send what is due; returns how long until the next retry is due.
    async fn deliver_due(&self) -> Result<Option<Duration>, StoreError> {
        let keys = self.store.meta_list(PREFIX).await?;
        self.stats.pending.store(keys.len() as u64, Ordering::Relaxed);
        let mut soonest: Option<u64> = None;
        let known: std::collections::HashMap<String, u64> = {
            let mut due = self.due.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            due.retain(|k, _| keys.binary_search(k).is_ok());
            due.clone()
        };
        for key in keys {
            if let Some(&next) = known.get(&key) {
                if next > now_ms() {
                    soonest = Some(soonest.map_or(next, |s| s.min(next)));
                    continue;
                }
            }
            let Some(raw) = self.store.meta_get(&key).await? else { continue };
            let Ok(mut doc) = serde_json::from_slice::<Pending>(&raw) else {
                tracing::warn!(%key, "event document does not parse; removed");
                self.store.meta_delete(&key).await?;
                continue;
            };
            let body = Bytes::from(serde_json::to_vec(&doc.event).expect("events serialise"));
            let now = now_ms();
            let mut changed = false;
            let mut still = Vec::new();
            for mut owed in std::mem::take(&mut doc.owed) {
                let Some(i) = self.endpoints.iter().position(|e| e.name == owed.endpoint) else {
                    changed = true; // an endpoint no longer configured
                    continue;
                };
                let ep = &self.endpoints[i];
                if owed.next_ms > now {
                    soonest = Some(soonest.map_or(owed.next_ms, |s| s.min(owed.next_ms)));
                    still.push(owed);
                    continue;
                }
                changed = true;
                match self.send(ep, &body).await {
                    Ok(()) => {
                        self.stats.delivered[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(reason) => {
                        self.stats.failed[i].fetch_add(1, Ordering::Relaxed);
                        if now.saturating_sub(doc.created_ms) >= ep.give_up_after.as_millis() as u64 {
                            self.stats.expired[i].fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(endpoint = %ep.name, id = %doc.event["id"], %reason, "event given up");
                            continue;
                        }
                        owed.attempts += 1;
                        let backoff =
                            Duration::from_secs(1u64 << owed.attempts.min(20).saturating_sub(1)).min(ep.retry_max);
                        owed.next_ms = now + backoff.as_millis() as u64;
                        tracing::info!(endpoint = %ep.name, attempts = owed.attempts, %reason, "event delivery failed; retrying later");
                        soonest = Some(soonest.map_or(owed.next_ms, |s| s.min(owed.next_ms)));
                        still.push(owed);
                    }
                }
            }
            let next = still.iter().map(|o| o.next_ms).min();
            if still.is_empty() {
                self.store.meta_delete(&key).await?;
            } else if changed {
                doc.owed = still;
                self.store.meta_put(&key, Bytes::from(serde_json::to_vec(&doc).expect("events serialise"))).await?;
            }
            let mut due = self.due.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match next {
                Some(n) => due.insert(key, n),
                None => due.remove(&key),
            };
        }
        Ok(soonest.map(|s| Duration::from_millis(s.saturating_sub(now_ms()))))
    }

    async fn send(&self, ep: &Endpoint, body: &Bytes) -> Result<(), String> {
        let mut req = self
            .http
            .post(&ep.url)
            .timeout(ep.timeout)
            .header("content-type", "application/cloudevents+json")
            .body(body.clone());
        if let Some(key) = &ep.key {
            let tag = ring::hmac::sign(key, body);
            req = req.header("x-wharf-signature", format!("sha256={}", hex::encode(tag.as_ref())));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Err(if e.is_timeout() { "timed out".into() } else { e.to_string() }),
        }
    }
}
