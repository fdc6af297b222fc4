//! The console's page frame and the small formatting helpers its pages share (escaping, sizes, ages).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A repository name in a URL path (its `/` stay; names allow nothing else that needs encoding).
pub fn path(repo: &str) -> String {
    esc(repo)
}

/// A value in a URL query string.
pub fn query(s: &str) -> String {
    esc(&serde_urlencoded::to_string([("", s)]).unwrap_or_default()[1..])
}

/// `12.3 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `3h`, `2d` (whole units).
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How long ago a unix time was, with the exact time as a tooltip.
pub fn age(unix: u64) -> String {
    let now = crate::history::now_secs();
    let text = if unix > now {
        "just now".to_owned()
    } else {
        format!("{} ago", duration(std::time::Duration::from_secs(now - unix)))
    };
    format!("<time datetime=\"{0}\" title=\"{0}\">{text}</time>", crate::history::rfc3339(unix))
}

/// When a future unix time comes.
pub fn when(unix: u64) -> String {
    let now = crate::history::now_secs();
    let text = if unix <= now {
        "due now".to_owned()
    } else {
        format!("in {}", duration(std::time::Duration::from_secs(unix - now)))
    };
    format!("<time datetime=\"{0}\" title=\"{0}\">{text}</time>", crate::history::rfc3339(unix))
}

/// One HTML page being written.
pub struct Page {
    body: String,
}

impl Page {
    /// A page titled `title`, for `user` (shown in the header).
    pub fn new(title: &str, user: &str) -> Page {
        let mut body = String::with_capacity(16 * 1024);
        body.push_str(&format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{} · Wharf</title><link rel=\"stylesheet\" href=\"/ui/console.css\"></head><body>\
             <header><b>Wharf</b><nav aria-label=\"Main\"><a href=\"/\">Repositories</a><a href=\"/ui/mirror\">Mirror</a>\
             <a href=\"/ui/sync\">Sync</a><a href=\"/ui/storage\">Storage</a></nav>\
             <span class=\"mute\" id=\"user\">{}</span></header><main>",
            esc(title),
            esc(user)
        ));
        Page { body }
    }

    /// Append trusted markup (callers escape what they interpolate).
    pub fn push(&mut self, html: &str) {
        self.body.push_str(html);
    }

    /// The response.
    pub fn finish(mut self) -> Response {
        self.body.push_str("</main></body></html>");
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_FRAME_OPTIONS, "DENY"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
                ),
            ],
            self.body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(12_345_678), "12.3 MB");
        assert_eq!(query("sha256:ab cd"), "sha256%3Aab+cd");
        assert_eq!(duration(std::time::Duration::from_secs(3 * 86_400)), "3d");
    }
}
