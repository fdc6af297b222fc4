//! `[scrub]`: the slow background integrity check inside `serve`, and the byte-size parser its rate uses.

use serde::Deserialize;

use super::ConfigIssue;

/// `[scrub]`: re-hash every stored object every `every`, at most `rate` bytes per second. Without the section
/// `serve` never scrubs (`wharf scrub` still can).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubConfig {
    /// `every = "24h"`: one pass this long after start-up and then at this interval (from the end of a pass).
    pub every: String,
    /// `rate = "50MiB"`: bytes re-hashed per second, at most (`B`, `KB`/`MB`/`GB`/`TB` powers of 1000,
    /// `KiB`/`MiB`/`GiB`/`TiB` powers of 1024, an optional `/s`).
    #[serde(default = "default_rate")]
    pub rate: String,
}

/// The background scrub's rate when `[scrub]` names none.
pub const DEFAULT_RATE: &str = "50MiB";

fn default_rate() -> String {
    DEFAULT_RATE.into()
}

impl ScrubConfig {
    /// The interval between passes (validated by `Config::validate`).
    pub fn every(&self) -> Result<std::time::Duration, String> {
        super::sync::parse_every(&self.every)
    }

    /// Bytes per second (validated by `Config::validate`).
    pub fn rate(&self) -> Result<u64, String> {
        parse_rate(&self.rate)
    }

    pub(super) fn issues(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if let Err(reason) = self.every() {
            out.push(ConfigIssue { key: "scrub.every".into(), reason });
        }
        if let Err(reason) = self.rate() {
            out.push(ConfigIssue { key: "scrub.rate".into(), reason });
        }
        out
    }
}

/// A rate in bytes per second: a size (the one size syntax, [`super::size::parse_size`]), optionally followed by
/// `/s`; never zero.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = super::size::parse_size(t.strip_suffix("/s").unwrap_or(t))?;
    if n == 0 {
        return Err(format!("{s:?}: the rate must be more than zero bytes per second"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        use super::super::size::parse_size;
        assert_eq!(parse_size("50MiB"), Ok(50 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("500 mb"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
        for bad in ["", "MiB", "1.5", "-1MB", "10 parsecs", "99999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("50MiB/s"), Ok(50 << 20));
        assert!(parse_rate("0MiB").is_err());
    }
}
