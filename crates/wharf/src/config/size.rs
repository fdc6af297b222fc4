//! Byte sizes in the configuration: `"50GiB"`, `"512MiB"`, `"10GB"`, `"1.5TiB"`, `"1048576"` or a bare TOML
//! integer. Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (kB, MB, GB, TB) powers of
//! 1000; units are case-insensitive.

use serde::Deserialize;

/// A size as written in the file: a TOML integer (bytes) or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    /// `max_bytes = 1048576`
    Bytes(u64),
    /// `max_bytes = "50GiB"`
    Text(String),
}

impl SizeValue {
    /// The size in bytes, or why the text is not one.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(0) => Err("must be more than 0 bytes".into()),
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(t) => parse_size(t),
        }
    }
}

/// Parse a size: a number (decimals allowed with a unit) and an optional unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim());
    const HELP: &str = "write a size like \"50GiB\", \"512MiB\", \"10GB\" or a number of bytes";
    if num.is_empty() {
        return Err(format!("{text:?} is not a size: {HELP}"));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; {HELP}")),
    };
    let bytes = if let Some((_, frac)) = num.split_once('.') {
        if mult == 1 || frac.is_empty() || frac.contains('.') {
            return Err(format!("{text:?} is not a size: {HELP}"));
        }
        let v: f64 = num.parse().map_err(|_| format!("{text:?} is not a size: {HELP}"))?;
        let b = v * mult as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(format!("{text:?} is too large"));
        }
        b as u64
    } else {
        let n: u64 = num.parse().map_err(|_| format!("{text:?} is too large"))?;
        n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too large"))?
    };
    if bytes == 0 {
        return Err(format!("{text:?}: must be more than 0 bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_size(" 2 kib ").unwrap(), 2048);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("100b").unwrap(), 100);
        assert_eq!(parse_size("1T").unwrap(), 1_000_000_000_000);
        for bad in ["", "GiB", "ten", "5 parsecs", "1.5", "0", "0GiB", "1..2GiB", "99999999999999999999", "20000000TiB"]
        {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(parse_size("5 parsecs").unwrap_err().contains("unknown unit"));
        assert_eq!(SizeValue::Bytes(7).bytes().unwrap(), 7);
        assert!(SizeValue::Bytes(0).bytes().is_err());
    }
}
