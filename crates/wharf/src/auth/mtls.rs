//! Mutual-TLS identities as users: with `[server.tls] client_ca_file` and access control on, a client
//! certificate verified during the handshake names the caller, so machines can authenticate without a
//! password. The user name is the subject CN, or, without a CN, the first subject alternative name as
//! [`ClientIdentity::sans`] writes it (`DNS:ci-bot.example`, `URI:spiffe://…`). Explicit credentials win: the
//! certificate only speaks for requests that bring none (see `AccessControl::identify`).

use crate::tls::ClientIdentity;

/// The user name a verified certificate stands for; `None` for a certificate without any name.
pub fn certificate_user(identity: &ClientIdentity) -> Option<String> {
    identity
        .common_name
        .as_deref()
        .map(str::trim)
        .filter(|cn| !cn.is_empty())
        .map(str::to_owned)
        .or_else(|| identity.sans.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_first_then_the_first_san() {
        let id = |cn: Option<&str>, sans: &[&str]| ClientIdentity {
            common_name: cn.map(str::to_owned),
            sans: sans.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(certificate_user(&id(Some("ci-bot"), &["DNS:x.example"])).as_deref(), Some("ci-bot"));
        assert_eq!(
            certificate_user(&id(None, &["DNS:ci-bot.example", "URI:spiffe://w/ci"])).as_deref(),
            Some("DNS:ci-bot.example")
        );
        assert_eq!(certificate_user(&id(Some(" "), &["IP:192.0.2.1"])).as_deref(), Some("IP:192.0.2.1"));
        assert_eq!(certificate_user(&id(None, &[])), None);
    }
}
