//! `[auth]` and `[[access]]`: where users come from and what they may do (see `policy::access` for the
//! decision order and `auth` for verification).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigIssue;

/// Default for [`AuthConfig::reload_interval_secs`]: the htpasswd file is `stat`ed this often.
pub const DEFAULT_AUTH_RELOAD_SECS: u64 = 5;
/// Default lifetime of a registry token: long enough for a pull of large layers to start every request it
/// needs, short enough that a rule change or a removed user takes effect within minutes.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 300;
/// Default lifetime of a refresh token (`docker login`'s identity token).
pub const DEFAULT_REFRESH_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// Default `service` name in challenges and in the tokens' audience.
pub const DEFAULT_SERVICE: &str = "wharf";
/// Default for [`OidcConfig::jwks_refresh_secs`]: how long keys fetched from `jwks_url` are used before the
/// next fetch (issuers rotate keys with overlap, so minutes are fine).
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 300;
/// Default for [`OidcConfig::username_claim`]: the subject, which every issuer sets.
pub const DEFAULT_USERNAME_CLAIM: &str = "sub";

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `htpasswd = "users.htpasswd"`: bcrypt entries as `htpasswd -B` writes them; reloaded when it changes.
    pub htpasswd: Option<PathBuf>,
    /// `[auth.groups] ci = ["bob", "carol"]`: groups for `group:<name>` in `[[access]]` users.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// `public_status = true`: `/_wharf/*` and `/metrics` answer anyone (otherwise they need `admin`).
    #[serde(default)]
    pub public_status: bool,
    /// How often the htpasswd file is checked for changes (seconds).
    pub reload_interval_secs: Option<u64>,
    /// `service` in the Bearer challenge and the audience of issued tokens (default `wharf`).
    pub service: Option<String>,
    /// The token endpoint's public URL for the challenge's `realm` (default: this server's own
    /// `/auth/token`, built from the request's `Host` and scheme). Set it behind a proxy that rewrites either.
    pub token_realm: Option<String>,
    /// Lifetime of issued registry tokens (seconds, default 300).
    pub token_ttl_secs: Option<u64>,
    /// Lifetime of refresh tokens handed to `docker login` and other OAuth2 clients (seconds, default 30 days;
    /// 0 turns refresh tokens off).
    pub refresh_token_ttl_secs: Option<u64>,
    /// `[[auth.oidc]]`: OIDC issuers whose JWTs log in (workload identity: Kubernetes service accounts, CI
    /// jobs), so machines need no stored secret.
    #[serde(default)]
    pub oidc: Vec<OidcConfig>,
}

/// One `[[auth.oidc]]` entry: an issuer whose signed JWTs are accepted as logins. `issuer` and `audience` are
/// defaulted here only so `wharf config check` can name them when missing (instead of a parse error).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The exact `iss` claim, e.g. `https://kubernetes.default.svc` or
    /// `https://token.actions.githubusercontent.com`; it also selects the entry for a token.
    #[serde(default)]
    pub issuer: String,
    /// The `aud` claim must contain this value, so tokens minted for other services are not accepted here.
    #[serde(default)]
    pub audience: String,
    /// A JWK Set file (e.g. `kubectl get --raw /openid/v1/jwks`), read again when it changes.
    pub jwks_file: Option<PathBuf>,
    /// Where the issuer publishes its JWK Set (http or https, no credentials); fetched and cached.
    pub jwks_url: Option<String>,
    /// Seconds keys from `jwks_url` are used before they are fetched again (default 300).
    pub jwks_refresh_secs: Option<u64>,
    /// The claim that becomes the user name (default `sub`).
    pub username_claim: Option<String>,
    /// A string-array claim whose values become groups for `group:<name>` rules (merged with `[auth.groups]`).
    pub groups_claim: Option<String>,
    /// Put before the user name (e.g. `k8s:`), so a token's subject cannot collide with an htpasswd user.
    #[serde(default)]
    pub user_prefix: String,
}

impl OidcConfig {
    /// How long keys fetched from `jwks_url` stay in use.
    pub fn jwks_refresh(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.jwks_refresh_secs.unwrap_or(DEFAULT_JWKS_REFRESH_SECS))
    }

    /// The claim read as the user name.
    pub fn username_claim(&self) -> &str {
        self.username_claim.as_deref().unwrap_or(DEFAULT_USERNAME_CLAIM)
    }

    fn issues(&self, at: &str) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut issue = |key: &str, reason: String| out.push(ConfigIssue { key: format!("{at}.{key}"), reason });
        if self.issuer.is_empty() {
            issue(
                "issuer",
                "is required: the exact `iss` of the tokens (e.g. \"https://kubernetes.default.svc\")".into(),
            );
        }
        if self.audience.is_empty() {
            issue("audience", "is required: a value the tokens' `aud` claim must contain (e.g. \"wharf\")".into());
        }
        match (&self.jwks_file, &self.jwks_url) {
            (None, None) => {
                issue("jwks_file", "set jwks_file or jwks_url (where the issuer's signing keys are)".into())
            }
            (Some(_), Some(_)) => issue("jwks_url", "set only one of jwks_file and jwks_url".into()),
            (Some(f), None) if f.as_os_str().is_empty() => issue("jwks_file", "must name a file".into()),
            (Some(_), None) => {}
            (None, Some(url)) => match reqwest::Url::parse(url) {
                // Checked first, and the URL is never echoed: it holds a secret that must not reach logs.
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    issue("jwks_url", "must not contain credentials (user:password@); JWK Sets are public".into())
                }
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ if url.contains('@') => issue(
                    "jwks_url",
                    "is not an http:// or https:// URL (not shown: it may contain credentials)".into(),
                ),
                _ => issue("jwks_url", format!("{url:?} is not an http:// or https:// URL")),
            },
        }
        match self.jwks_refresh_secs {
            Some(0) => issue("jwks_refresh_secs", "must be at least 1".into()),
            Some(_) if self.jwks_url.is_none() => issue(
                "jwks_refresh_secs",
                "applies only to jwks_url (a jwks_file is read again when it changes)".into(),
            ),
            _ => {}
        }
        if self.username_claim.as_deref() == Some("") {
            issue("username_claim", "must name a claim (default \"sub\")".into());
        }
        if self.groups_claim.as_deref() == Some("") {
            issue("groups_claim", "must name a claim, or be left out".into());
        }
        if self.user_prefix.starts_with("group:") {
            issue("user_prefix", "must not start with \"group:\" (rules would read the users as groups)".into());
        }
        out
    }
}

impl AuthConfig {
    /// The polling period for htpasswd reloads.
    pub fn reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.reload_interval_secs.unwrap_or(DEFAULT_AUTH_RELOAD_SECS))
    }

    /// The service name used in challenges and as the tokens' audience.
    pub fn service(&self) -> &str {
        self.service.as_deref().unwrap_or(DEFAULT_SERVICE)
    }

    /// Lifetime of an issued registry token.
    pub fn token_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.token_ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS))
    }

    /// Lifetime of a refresh token; `None` when refresh tokens are turned off.
    pub fn refresh_token_ttl(&self) -> Option<std::time::Duration> {
        match self.refresh_token_ttl_secs.unwrap_or(DEFAULT_REFRESH_TOKEN_TTL_SECS) {
            0 => None,
            s => Some(std::time::Duration::from_secs(s)),
        }
    }

    pub(super) fn issues(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if let Some(s) = &self.service {
            if s.is_empty() || s.contains(['"', '\\']) || s.chars().any(char::is_control) {
                out.push(ConfigIssue {
                    key: "auth.service".into(),
                    reason: "must be a non-empty name without quotes, backslashes or control characters".into(),
                });
            }
        }
        if let Some(r) = &self.token_realm {
            let ok = reqwest::Url::parse(r).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.username().is_empty() && u.password().is_none()
            }) && !r.contains('"');
            if !ok {
                out.push(ConfigIssue {
                    key: "auth.token_realm".into(),
                    // Not echoed: a URL given here may carry credentials.
                    reason: "must be an http(s) URL without credentials or quotes".into(),
                });
            }
        }
        if self.token_ttl_secs.is_some_and(|t| !(10..=86_400).contains(&t)) {
            out.push(ConfigIssue {
                key: "auth.token_ttl_secs".into(),
                reason: "must be between 10 and 86400 seconds".into(),
            });
        }
        if self.refresh_token_ttl_secs.is_some_and(|t| t > 366 * 86_400) {
            out.push(ConfigIssue {
                key: "auth.refresh_token_ttl_secs".into(),
                reason: "must be at most a year (0 turns refresh tokens off)".into(),
            });
        }
        if self.htpasswd.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            out.push(ConfigIssue { key: "auth.htpasswd".into(), reason: "must name a file".into() });
        }
        if self.reload_interval_secs == Some(0) {
            out.push(ConfigIssue { key: "auth.reload_interval_secs".into(), reason: "must be at least 1".into() });
        }
        // htpasswd users cannot contain ':' (the Basic separator), OIDC users usually do
        // (`k8s:system:serviceaccount:ci:builder`), so ':' in members is only accepted with `[[auth.oidc]]`.
        let colon_ok = !self.oidc.is_empty();
        for (g, members) in &self.groups {
            let bad = |m: &String| m.is_empty() || m.starts_with("group:") || (m.contains(':') && !colon_ok);
            if g.is_empty() || members.iter().any(bad) {
                out.push(ConfigIssue {
                    key: format!("auth.groups.{g}"),
                    reason: if colon_ok {
                        "group names and members must be non-empty; members are user names, not groups".into()
                    } else {
                        "group names and members must be non-empty user names without ':'".into()
                    },
                });
            }
        }
        for (i, o) in self.oidc.iter().enumerate() {
            out.extend(o.issues(&format!("auth.oidc[{i}]")));
            if !o.issuer.is_empty() && self.oidc[..i].iter().any(|p| p.issuer == o.issuer) {
                out.push(ConfigIssue {
                    key: format!("auth.oidc[{i}].issuer"),
                    reason: format!("{:?} is configured twice; one entry per issuer", o.issuer),
                });
            }
        }
        out
    }
}

/// One `[[access]]` entry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Repository globs (`team/*`; `*` also matches `/`) or `re:<regex>`.
    pub repositories: Vec<String>,
    /// User names, `group:<name>`, `anonymous`, or `*` (every authenticated user).
    pub users: Vec<String>,
    /// `pull`, `push`, `delete`, `admin`.
    pub actions: Vec<String>,
}

impl AccessConfig {
    /// Compile into a rule.
    pub fn compile(&self) -> Result<crate::policy::access::Rule, Vec<(String, String)>> {
        crate::policy::access::Rule::compile(&self.repositories, &self.users, &self.actions)
    }

    pub(super) fn issues(&self, prefix: &str) -> Vec<ConfigIssue> {
        match self.compile() {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .into_iter()
                .map(|(key, reason)| ConfigIssue { key: format!("{prefix}.{key}"), reason })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn keys(text: &str) -> Vec<String> {
        Config::parse(text, Path::new("w.toml")).unwrap().validate().into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn an_oidc_entry_alone_turns_access_control_on() {
        let c = Config::parse(
            "[[auth.oidc]]\nissuer = \"https://i.test\"\naudience = \"w\"\njwks_url = \"https://i.test/k\"\n",
            Path::new("w.toml"),
        )
        .unwrap();
        assert!(c.access_control());
        assert_eq!(c.validate(), Vec::new());
        let o = &c.auth.unwrap().oidc[0];
        assert_eq!((o.username_claim(), o.jwks_refresh().as_secs()), ("sub", 300));
    }

    #[test]
    fn oidc_entries_name_every_problem() {
        assert_eq!(
            keys("[[auth.oidc]]\nusername_claim = \"\"\ngroups_claim = \"\"\nuser_prefix = \"group:x\"\n"),
            [
                "auth.oidc[0].issuer",
                "auth.oidc[0].audience",
                "auth.oidc[0].jwks_file",
                "auth.oidc[0].username_claim",
                "auth.oidc[0].groups_claim",
                "auth.oidc[0].user_prefix"
            ]
        );
        let entry = "[[auth.oidc]]\nissuer = \"https://i.test\"\naudience = \"w\"\n";
        assert_eq!(keys(&format!("{entry}jwks_file = \"\"\n")), ["auth.oidc[0].jwks_file"]);
        assert_eq!(
            keys(&format!("{entry}jwks_file = \"k\"\njwks_refresh_secs = 60\n")),
            ["auth.oidc[0].jwks_refresh_secs"]
        );
        assert_eq!(
            keys(&format!("{entry}jwks_url = \"https://i.test/k\"\njwks_refresh_secs = 0\n")),
            ["auth.oidc[0].jwks_refresh_secs"]
        );
        for url in ["file:///etc/jwks.json", "i.test/jwks", "https://user:pw@i.test/k", "https://user@i.test/k"] {
            let issues = Config::parse(&format!("{entry}jwks_url = {url:?}\n"), Path::new("w")).unwrap().validate();
            assert_eq!(issues.len(), 1, "{url}: {issues:?}");
            assert_eq!(issues[0].key, "auth.oidc[0].jwks_url");
            assert!(!issues[0].reason.contains("pw") && !issues[0].reason.contains("user@"), "{}", issues[0].reason);
        }
        assert_eq!(
            keys(&format!("{entry}jwks_file = \"a\"\n{entry}jwks_file = \"b\"\n")),
            ["auth.oidc[1].issuer"],
            "one entry per issuer"
        );
        let unknown = Config::parse(&format!("{entry}jwks_file = \"a\"\nclient_secret = \"s\"\n"), Path::new("w"));
        assert!(unknown.unwrap_err().to_string().contains("client_secret"));
    }

    #[test]
    fn group_members_may_be_oidc_users_only_with_oidc() {
        let groups = "[auth.groups]\nci = [\"k8s:system:serviceaccount:ci:builder\"]\n";
        assert_eq!(keys(&format!("[auth]\n{groups}")), ["auth.groups.ci"]);
        let oidc = "[[auth.oidc]]\nissuer = \"https://i.test\"\naudience = \"w\"\njwks_file = \"k\"\n";
        assert_eq!(keys(&format!("{oidc}{groups}")), Vec::<String>::new());
        assert_eq!(keys(&format!("{oidc}[auth.groups]\nci = [\"group:ops\"]\n")), ["auth.groups.ci"]);
    }
}
