//! A per-upstream circuit breaker: after `threshold` consecutive failures the upstream is not dialled for
//! `open_for`, so a dead registry costs one timeout per interval instead of one per pull. After the interval
//! one request goes through as a probe; its outcome closes or re-opens the circuit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;

/// Health snapshot for status views.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// `closed` (dialling), `open` (skipping) or `probing`.
    pub state: &'static str,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Seconds until the next probe, when open.
    pub open_for_secs: Option<u64>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Seconds since the last success, if any.
    pub last_success_secs_ago: Option<u64>,
}

struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// When the current probe started; a probe that never reports (its request was dropped) expires after
    /// another interval, so the circuit cannot stay open for good.
    probing: Option<Instant>,
    last_error: Option<String>,
    last_success: Option<Instant>,
}

/// The breaker.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State {
                failures: 0,
                open_until: None,
                probing: None,
                last_error: None,
                last_success: None,
            }),
        }
    }

    /// May a request go out now? `Err` carries the time left while the circuit is open.
    pub fn allow(&self) -> Result<(), Duration> {
        let mut s = lock(&self.state);
        match s.open_until {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            Some(_) if s.probing.is_some_and(|t| t.elapsed() < self.open_for) => Err(Duration::ZERO),
            Some(_) => {
                s.probing = Some(Instant::now());
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The upstream answered (any HTTP status that is not a server failure).
    pub fn success(&self) {
        let mut s = lock(&self.state);
        s.failures = 0;
        s.open_until = None;
        s.probing = None;
        s.last_success = Some(Instant::now());
    }

    /// The upstream failed (transport error, timeout, 5xx after retries).
    pub fn failure(&self, why: &str) {
        let mut s = lock(&self.state);
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(why.to_owned());
        s.probing = None;
        if s.failures >= self.threshold {
            // An absurd `breaker_open_secs` must not overflow the clock: such a circuit opens for a day.
            let now = Instant::now();
            s.open_until = Some(now.checked_add(self.open_for).unwrap_or(now + Duration::from_secs(86_400)));
        }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        let s = lock(&self.state);
        let now = Instant::now();
        let open = s.open_until.filter(|u| *u > now);
        Health {
            state: if open.is_some() {
                "open"
            } else if s.probing.is_some() || s.open_until.is_some() {
                "probing"
            } else {
                "closed"
            },
            consecutive_failures: s.failures,
            open_for_secs: open.map(|u| (u - now).as_secs()),
            last_error: s.last_error.clone(),
            last_success_secs_ago: s.last_success.map(|t| t.elapsed().as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let b = Breaker::new(2, Duration::from_millis(400));
        assert!(b.allow().is_ok());
        b.failure("refused");
        assert!(b.allow().is_ok(), "one failure is below the threshold");
        b.failure("refused");
        assert!(b.allow().is_err(), "open");
        assert_eq!(b.health().state, "open");
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.allow().is_ok(), "probe");
        assert!(b.allow().is_err(), "only one probe at a time");
        b.failure("still down");
        assert!(b.allow().is_err(), "re-opened");
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.allow().is_ok());
        b.success();
        assert!(b.allow().is_ok() && b.allow().is_ok());
        assert_eq!(b.health().state, "closed");
    }

    #[test]
    fn a_poisoned_breaker_keeps_working() {
        let b = std::sync::Arc::new(Breaker::new(1, Duration::from_secs(60)));
        let b2 = b.clone();
        let r = std::thread::spawn(move || {
            let _held = b2.state.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(r.is_err() && b.state.is_poisoned());
        assert!(b.allow().is_ok());
        b.failure("down");
        assert!(b.allow().is_err());
        assert_eq!(b.health().state, "open");
        b.success();
        assert!(b.allow().is_ok());
    }

    #[test]
    fn a_huge_open_interval_does_not_overflow() {
        let b = Breaker::new(1, Duration::MAX);
        b.failure("down");
        assert!(b.allow().is_err());
    }

    #[test]
    fn an_abandoned_probe_expires() {
        let b = Breaker::new(1, Duration::from_millis(400));
        b.failure("down");
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.allow().is_ok(), "probe");
        // the probe's request is dropped: neither success nor failure is reported
        assert!(b.allow().is_err());
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.allow().is_ok(), "a new probe after another interval");
    }
}
