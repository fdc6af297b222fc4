//! Failed logins per client address: after [`MAX_FAILURES`] within [`WINDOW`], every login from that address
//! is refused for [`BLOCK`]. The map is bounded, so a flood of addresses cannot grow it without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed per address within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long an address is refused once over the limit.
pub const BLOCK: Duration = Duration::from_secs(60);
/// Addresses tracked at once.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// The per-address failure counts.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    entries: HashMap<IpAddr, Entry>,
}

impl FailureLimiter {
    /// Seconds `ip` must still wait, if it is blocked.
    pub fn blocked(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        let until = self.entries.get(&ip)?.blocked_until?;
        if until > now {
            Some((until - now).as_secs().max(1))
        } else {
            self.entries.remove(&ip);
            None
        }
    }

    /// Count one failure from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if !self.entries.contains_key(&ip) && self.entries.len() >= MAX_TRACKED {
            self.entries.retain(|_, e| e.blocked_until.is_some_and(|u| u > now) || now - e.since < WINDOW);
            if self.entries.len() >= MAX_TRACKED {
                // Still full of live entries: forget the oldest window to make room.
                if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.since).map(|(k, _)| *k) {
                    self.entries.remove(&oldest);
                }
            }
        }
        let e = self.entries.entry(ip).or_insert(Entry { since: now, failures: 0, blocked_until: None });
        if now - e.since >= WINDOW {
            *e = Entry { since: now, failures: 0, blocked_until: None };
        }
        e.failures += 1;
        if e.failures >= MAX_FAILURES {
            e.blocked_until = Some(now + BLOCK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_forgets_later() {
        let mut l = FailureLimiter::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(ip, t0);
        }
        assert_eq!(l.blocked(ip, t0), None);
        l.failed(ip, t0);
        assert_eq!(l.blocked(ip, t0), Some(BLOCK.as_secs()));
        assert_eq!(l.blocked(ip, t0 + BLOCK), None);
        // Failures spread over more than a window never block.
        for i in 0..3 * MAX_FAILURES {
            l.failed(ip, t0 + BLOCK + WINDOW / 5 * i);
        }
        assert!(l.entries.len() == 1);
    }

    #[test]
    fn bounded() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            l.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.entries.len() <= MAX_TRACKED);
    }
}
