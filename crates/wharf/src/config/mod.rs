//! Configuration: serde data only. A TOML file (`--config`), then `WHARF_*` environment variables, then
//! command-line flags, each overriding the one before; defaults live in `impl Default` and nowhere else.
//!
//! Unknown keys are errors, and every error names the file, the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use oci::reference::normalize_registry;
use serde::Deserialize;

pub mod auth;
pub mod events;
pub mod retention;
pub mod scrub;
pub mod size;
pub mod sync;
pub mod tags;
pub mod upstream;

use self::auth::{AccessConfig, AuthConfig};
use self::sync::SyncConfig;
use self::upstream::UpstreamConfig;

/// Address `wharf serve` listens on when nothing else is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Data directory used when nothing else is configured (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./wharf-data";

/// The whole configuration file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where content is stored.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Registries to mirror (`[[upstream]]` tables).
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Images to keep copied (`[[sync]]` tables).
    #[serde(default, rename = "sync")]
    pub syncs: Vec<SyncConfig>,
    /// `[auth]`: identity sources; configuring it turns access control on (deny by default).
    pub auth: Option<AuthConfig>,
    /// `[[access]]`: who may do what where (first match wins); any entry turns access control on.
    #[serde(default)]
    pub access: Vec<AccessConfig>,
    /// `[[tags]]`: immutable tags and required platforms for hosted repositories.
    #[serde(default, rename = "tags")]
    pub tag_rules: Vec<tags::TagRuleConfig>,
    /// `[[retention]]`: which tags of hosted repositories garbage collection removes, and how long untagged
    /// manifests stay.
    #[serde(default)]
    pub retention: Vec<retention::RetentionConfig>,
    /// `[[webhook]]`: endpoints that receive events (CloudEvents over HTTP POST).
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<events::WebhookConfig>,
    /// `[history]`: how many moves are kept per tag.
    #[serde(default)]
    pub history: tags::HistoryConfig,
    /// `[gc]`: garbage collection; without the section `serve` never collects (`wharf gc` still can).
    pub gc: Option<GcConfig>,
    /// `[scrub]`: background integrity checks; without the section `serve` never scrubs (`wharf scrub` can).
    pub scrub: Option<scrub::ScrubConfig>,
    /// `[mirror]`: settings of the pull-through cache as a whole (its size budget).
    pub mirror: Option<MirrorConfig>,
    /// `[console]`: the web console at `/`.
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// `[console]`: the web console.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Offer actions (delete a tag, run a sync entry, run a collection) to callers the access rules allow;
    /// without it the console is read-only [default: false].
    #[serde(default)]
    pub actions: bool,
}

/// `[mirror]`: the pull-through cache as a whole.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// `max_bytes = "50GiB"`: when the blobs linked from mirror cache repositories add up to more, the least
    /// recently used cached images are evicted (synced, pinned and hosted content never is).
    pub max_bytes: Option<size::SizeValue>,
}

impl MirrorConfig {
    /// The budget in bytes, if set (validated by [`Config::validate`]).
    pub fn max_bytes(&self) -> Result<Option<u64>, String> {
        self.max_bytes.as_ref().map(size::SizeValue::bytes).transpose()
    }

    fn issues(&self) -> Vec<ConfigIssue> {
        match self.max_bytes() {
            Err(reason) => vec![ConfigIssue { key: "mirror.max_bytes".into(), reason }],
            Ok(_) => Vec::new(),
        }
    }
}

/// `[gc]`: scheduled garbage collection inside `serve`, and the grace `wharf gc` uses by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// `every = "1h"`: collect once this long after start-up and then at this interval; absent: never.
    pub every: Option<String>,
    /// `grace = "1h"`: content written or linked within this long is kept (an upload whose manifest is not
    /// pushed yet, a push in progress); `"0s"` collects everything unreferenced at once.
    #[serde(default = "default_grace")]
    pub grace: String,
}

fn default_grace() -> String {
    "1h".into()
}

impl GcConfig {
    /// The schedule, if any (validated by [`Config::validate`]).
    pub fn every(&self) -> Result<Option<std::time::Duration>, String> {
        self.every.as_deref().map(self::sync::parse_every).transpose()
    }

    /// The grace (validated by [`Config::validate`]).
    pub fn grace(&self) -> Result<std::time::Duration, String> {
        self::sync::parse_duration(&self.grace)
    }

    fn issues(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if let Err(reason) = self.every() {
            out.push(ConfigIssue { key: "gc.every".into(), reason });
        }
        if let Err(reason) = self.grace() {
            out.push(ConfigIssue { key: "gc.grace".into(), reason });
        }
        out
    }
}

/// One problem found by [`Config::validate`], with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `upstream[0].url`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// `[server]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `listen = "host:port"`
    pub listen: Option<SocketAddr>,
    /// `[server.tls]`: serve HTTPS instead of plain HTTP (plain HTTP stays the default).
    pub tls: Option<TlsConfig>,
}

/// Default for [`TlsConfig::reload_interval_secs`]: cert-manager renews days before expiry, so a few seconds
/// of delay is irrelevant, and a `stat` of two or three files every few seconds costs nothing.
pub const DEFAULT_TLS_RELOAD_SECS: u64 = 5;

/// `[server.tls]`: the listener's certificate, and optionally the CA that signs client certificates (mTLS).
///
/// Paths are used as given (relative ones from the working directory), like every other file in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
    /// PEM bundle of CAs whose client certificates are accepted; turns on mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client certificate is `required` (the default with `client_ca_file`) or `optional`.
    pub client_auth: Option<ClientAuth>,
    /// How often the files are checked for changes (seconds); a changed pair is loaded for new handshakes.
    pub reload_interval_secs: Option<u64>,
}

/// `client_auth`: with `optional`, clients without a certificate are served anonymously (their identity is
/// simply absent); a certificate that is presented must still verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate are refused.
    Required,
    /// A client certificate is verified when sent, but not demanded.
    Optional,
}

impl TlsConfig {
    /// Problems visible without reading the files (the files themselves are checked by `crate::tls`).
    fn issues(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut issue = |key: &str, reason: &str| {
            out.push(ConfigIssue { key: format!("server.tls.{key}"), reason: reason.to_owned() })
        };
        if self.cert_file.as_os_str().is_empty() {
            issue("cert_file", "must name a PEM file");
        }
        if self.key_file.as_os_str().is_empty() {
            issue("key_file", "must name a PEM file");
        }
        if self.client_auth.is_some() && self.client_ca_file.is_none() {
            issue("client_auth", "needs client_ca_file (the CA that signs client certificates)");
        }
        if self.reload_interval_secs == Some(0) {
            issue("reload_interval_secs", "must be at least 1");
        }
        out
    }

    /// The polling period for certificate reloads.
    pub fn reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.reload_interval_secs.unwrap_or(DEFAULT_TLS_RELOAD_SECS))
    }

    /// Whether a client certificate is demanded (only meaningful with `client_ca_file`).
    pub fn client_cert_required(&self) -> bool {
        self.client_auth.unwrap_or(ClientAuth::Required) == ClientAuth::Required
    }
}

/// `[storage] backend`: where content lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// The data directory on local disk (the default: nothing to set up).
    #[default]
    Fs,
    /// An S3-compatible bucket, so several replicas share one store (the data directory keeps only
    /// per-process scratch space, spool files and locks).
    S3,
}

/// `[storage]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `data_dir = "/var/lib/wharf"`: root of the filesystem store (with `backend = "s3"`: local scratch).
    pub data_dir: Option<PathBuf>,
    /// `backend = "fs" | "s3"`.
    pub backend: StorageBackend,
    /// `bucket = "wharf"`: the S3 bucket (must exist).
    pub bucket: Option<String>,
    /// `endpoint = "http://127.0.0.1:3900"`: any S3-compatible endpoint; omitted for AWS.
    pub endpoint: Option<String>,
    /// `region = "us-east-1"` (else `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// `prefix = "prod/"`: every key goes under it, so several registries can share a bucket.
    pub prefix: Option<String>,
    /// `path_style = true`: `endpoint/bucket/key` requests (most self-hosted servers) instead of
    /// `bucket.endpoint/key`.
    pub path_style: bool,
    /// `access_key_id`: else the usual AWS sources (environment, profile, instance metadata).
    pub access_key_id: Option<String>,
    /// `secret_access_key`: with `access_key_id`; never printed.
    pub secret_access_key: Option<String>,
    /// `redirect = true`: answer blob GETs with a `307` to a presigned URL of the bucket, so clients fetch
    /// the bytes from the object store directly (clients must reach the endpoint). Default: stream.
    pub redirect: bool,
    /// `redirect_expiry = "20m"`: how long a presigned URL stays valid (at most 7 days).
    pub redirect_expiry: String,
    /// `sign_payload = true`: put the SHA-256 of every request body in its signature, so the object store
    /// checks the bytes it received (a second hash of everything pushed). Default: on for `http://`
    /// endpoints, off for `https://` and AWS (TLS protects the bytes in transit; Wharf hashed them already).
    pub sign_payload: Option<bool>,
    /// `upload_expiry = "24h"`: an upload session that receives no bytes for this long is forgotten and its
    /// bytes removed, so abandoned pushes do not fill the disk (`90s`, `30m`, `6h`, `1d`).
    pub upload_expiry: String,
    /// `max_uploads = 1000`: upload sessions open at once; one more gets `429 TOOMANYREQUESTS` until some
    /// finish or expire, so a misbehaving client cannot exhaust the session table.
    pub max_uploads: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: None,
            backend: StorageBackend::Fs,
            bucket: None,
            endpoint: None,
            region: None,
            prefix: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            redirect: false,
            redirect_expiry: "20m".into(),
            sign_payload: None,
            upload_expiry: "24h".into(),
            max_uploads: 1000,
        }
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("data_dir", &self.data_dir)
            .field("backend", &self.backend)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("redirect", &self.redirect)
            .field("redirect_expiry", &self.redirect_expiry)
            .field("sign_payload", &self.sign_payload)
            .field("upload_expiry", &self.upload_expiry)
            .field("max_uploads", &self.max_uploads)
            .finish()
    }
}

impl StorageConfig {
    /// Whether S3 request bodies are signed (see `sign_payload`).
    pub fn sign_payload(&self) -> bool {
        self.sign_payload.unwrap_or_else(|| self.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")))
    }

    /// How long presigned blob URLs live when `redirect` is on (`None`: blobs stream through Wharf).
    pub fn blob_redirects(&self) -> Result<Option<std::time::Duration>, String> {
        if !self.redirect || self.backend != StorageBackend::S3 {
            return Ok(None);
        }
        let d = self::sync::parse_every(&self.redirect_expiry)?;
        if d > std::time::Duration::from_secs(7 * 24 * 3600) {
            return Err("at most 7d (the longest an S3 presigned URL lives)".into());
        }
        Ok(Some(d))
    }

    /// `upload_expiry` as a duration (validated by [`Config::validate`]).
    pub fn upload_expiry(&self) -> Result<std::time::Duration, String> {
        self::sync::parse_every(&self.upload_expiry)
    }

    fn issues(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if let Err(reason) = self.upload_expiry() {
            out.push(ConfigIssue { key: "storage.upload_expiry".into(), reason });
        }
        if self.max_uploads == 0 {
            out.push(ConfigIssue {
                key: "storage.max_uploads".into(),
                reason: "must be at least 1 (no push could start)".into(),
            });
        }
        let issue = |key: &str, reason: &str| ConfigIssue { key: format!("storage.{key}"), reason: reason.into() };
        match self.backend {
            StorageBackend::Fs => {
                for (key, set) in [
                    ("bucket", self.bucket.is_some()),
                    ("endpoint", self.endpoint.is_some()),
                    ("prefix", self.prefix.is_some()),
                    ("access_key_id", self.access_key_id.is_some()),
                    ("secret_access_key", self.secret_access_key.is_some()),
                    ("redirect", self.redirect),
                    ("sign_payload", self.sign_payload.is_some()),
                ] {
                    if set {
                        out.push(issue(key, "only used with backend = \"s3\""));
                    }
                }
            }
            StorageBackend::S3 => {
                match self.bucket.as_deref() {
                    None | Some("") => out.push(issue("bucket", "backend = \"s3\" needs the bucket's name")),
                    Some(b) if b.contains('/') => out.push(issue("bucket", "a bucket name has no '/'")),
                    Some(_) => {}
                }
                if let Some(e) = &self.endpoint {
                    match reqwest::Url::parse(e) {
                        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                            out.push(issue("endpoint", "must be an http:// or https:// URL"))
                        }
                        Ok(u) if !u.username().is_empty() || u.password().is_some() => out.push(issue(
                            "endpoint",
                            "must not carry credentials; use access_key_id and secret_access_key",
                        )),
                        Ok(_) => {}
                        Err(err) => out.push(issue("endpoint", &format!("not a URL: {err}"))),
                    }
                }
                if let Some(p) = &self.prefix {
                    if p.starts_with('/') || p.split('/').any(|seg| seg == "." || seg == "..") {
                        out.push(issue("prefix", "must be a relative key prefix such as \"prod/\""));
                    }
                }
                if let Err(reason) = self.blob_redirects() {
                    out.push(issue("redirect_expiry", &reason));
                }
                if self.access_key_id.is_some() != self.secret_access_key.is_some() {
                    out.push(issue(
                        "access_key_id",
                        "access_key_id and secret_access_key go together (or leave both to the AWS_* sources)",
                    ));
                }
            }
        }
        out
    }
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {file}: cannot read it: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for Wharf's schema (the message names the key and line).
    #[error("config file {file}: {reason}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's explanation, including the key and position.
        reason: String,
    },
    /// The file parsed but has invalid values; every problem is listed.
    #[error("config file {file}: {}", issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        issues: Vec<ConfigIssue>,
    },
    /// A value from the environment or command line is invalid.
    #[error("{source_name}: {reason}")]
    Value {
        /// E.g. `WHARF_LISTEN` or `--listen`.
        source_name: String,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Whether access control is on: `[auth]` or any `[[access]]` entry is configured.
    pub fn access_control(&self) -> bool {
        self.auth.is_some() || !self.access.is_empty()
    }

    /// Parse TOML text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { file: file.to_owned(), reason: e.to_string().trim_end().to_owned() })
    }

    /// Read and parse a file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
        let config = Config::parse(&text, file)?;
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { file: file.to_owned(), issues })
        }
    }

    /// Every semantic problem (the parser already rejected unknown keys and wrong types).
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = self.storage.issues();
        if let Some(gc) = &self.gc {
            out.extend(gc.issues());
        }
        if let Some(scrub) = &self.scrub {
            out.extend(scrub.issues());
        }
        if let Some(m) = &self.mirror {
            out.extend(m.issues());
        }
        if let Some(tls) = &self.server.tls {
            out.extend(tls.issues());
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            out.extend(u.issues(&format!("upstream[{i}]")));
            let same = |o: &UpstreamConfig| normalize_registry(&o.name) == normalize_registry(&u.name);
            if self.upstreams[..i].iter().any(same) {
                out.push(ConfigIssue {
                    key: format!("upstream[{i}].name"),
                    reason: format!("{:?} is configured twice", u.name),
                });
            }
        }
        let names: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
        for (i, s) in self.syncs.iter().enumerate() {
            out.extend(s.issues(&format!("sync[{i}]"), &names));
            let name = s.display_name();
            if self.syncs[..i].iter().any(|o| o.display_name() == name) {
                out.push(ConfigIssue {
                    key: format!("sync[{i}].name"),
                    reason: format!("{name:?} is used by another [[sync]] entry; set distinct names"),
                });
            }
        }
        if let Some(auth) = &self.auth {
            out.extend(auth.issues());
        }
        for (i, a) in self.access.iter().enumerate() {
            out.extend(a.issues(&format!("access[{i}]")));
        }
        for (i, t) in self.tag_rules.iter().enumerate() {
            out.extend(t.issues(&format!("tags[{i}]")));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            out.extend(w.issues(&format!("webhook[{i}]")));
        }
        for (i, r) in self.retention.iter().enumerate() {
            out.extend(r.issues(&format!("retention[{i}]")));
        }
        out.extend(self.history.issues());
        if self.upstreams.iter().filter(|u| u.default).count() > 1 {
            out.push(ConfigIssue {
                key: "upstream[].default".into(),
                reason: "only one upstream can be the default".into(),
            });
        }
        out
    }
}

/// Effective settings after file, environment and flags are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The parsed file (for sections the flags do not cover).
    pub config: Config,
}

/// Values given on the command line or in the environment (clap merges those two, flags first).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `WHARF_LISTEN`.
    pub listen: Option<String>,
    /// `--data-dir` / `WHARF_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
}

impl Settings {
    /// Merge: overrides win over the file, the file over defaults.
    pub fn resolve(config: Config, over: Overrides) -> Result<Settings, ConfigError> {
        let listen = match over.listen {
            Some(s) => s.parse().map_err(|e| ConfigError::Value {
                source_name: "--listen / WHARF_LISTEN".into(),
                reason: format!("{s:?} is not a host:port socket address ({e})"),
            })?,
            None => config.server.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default address parses")),
        };
        let data_dir =
            over.data_dir.or_else(|| config.storage.data_dir.clone()).unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        Ok(Settings { listen, data_dir, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../../docs/config.example.toml");
        let c = Config::parse(text, Path::new("docs/config.example.toml")).unwrap();
        assert!(c.server.listen.is_some());
        assert!(c.server.tls.is_none(), "plain HTTP stays the default in the example");
        // The commented-out [server.tls] block parses and validates once uncommented.
        let tls: String = text
            .lines()
            .skip_while(|l| *l != "# [server.tls]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let t = Config::parse(&tls, Path::new("example [server.tls]")).unwrap();
        let t = t.server.tls.expect("the example documents [server.tls]");
        assert!(t.client_ca_file.is_some() && t.client_cert_required() && t.reload_interval_secs == Some(5));
        assert_eq!(c.validate(), Vec::new(), "the example is valid");
        assert_eq!((c.upstreams.len(), c.syncs.len()), (2, 2));
        assert!(!c.access_control(), "the example stays open (access control commented out)");
        // The commented-out access-control block parses and validates once uncommented.
        let auth: String = text
            .lines()
            .skip_while(|l| *l != "# [auth]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let a = Config::parse(&auth, Path::new("example [auth]")).unwrap();
        assert_eq!(a.validate(), Vec::new());
        assert!(a.access_control() && a.access.len() == 2);
        let auth = a.auth.unwrap();
        assert_eq!(auth.groups["ci"], ["bob", "carol"]);
        assert_eq!(auth.oidc.len(), 1, "the example documents [[auth.oidc]]");
        assert_eq!((auth.oidc[0].audience.as_str(), auth.oidc[0].user_prefix.as_str()), ("wharf", "k8s:"));
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:5000\"\nlisen = 1\n", Path::new("/etc/wharf.toml"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/etc/wharf.toml") && msg.contains("lisen"), "{msg}");
        let e = Config::parse("[server]\nlisten = \"nope\"\n", Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("w.toml") && e.contains("listen"), "{e}");
        let e = Config::parse("[strage]\n", Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("strage"), "{e}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let text = "[[upstream]]\nname = \"Docker.io\"\nurl = \"ftp://x\"\nimmutable_tags = [\"re:(\"]\n\n[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\ndefault = true\npassword = \"x\"\n";
        let c = Config::parse(text, Path::new("f")).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            ["upstream[0].name", "upstream[0].url", "upstream[0].immutable_tags[0]", "upstream[1].username"]
        );
    }

    #[test]
    fn one_registry_is_configured_once_whatever_its_spelling() {
        let text = "[[upstream]]\nname = \"docker.io\"\nurl = \"https://a\"\n\n[[upstream]]\nname = \"index.docker.io\"\nurl = \"https://b\"\n";
        let keys: Vec<String> =
            Config::parse(text, Path::new("f")).unwrap().validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["upstream[1].name"]);
    }

    #[test]
    fn storage_limits() {
        let c = Config::default();
        assert_eq!(c.storage.upload_expiry().unwrap(), std::time::Duration::from_secs(86_400));
        assert_eq!(c.storage.max_uploads, 1000);
        let c = Config::parse("[storage]\nupload_expiry = \"90s\"\nmax_uploads = 5\n", Path::new("f")).unwrap();
        assert_eq!((c.storage.upload_expiry().unwrap().as_secs(), c.storage.max_uploads), (90, 5));
        let c = Config::parse("[storage]\nupload_expiry = \"soon\"\nmax_uploads = 0\n", Path::new("f")).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["storage.upload_expiry", "storage.max_uploads"]);
    }

    #[test]
    fn s3_storage_keys_are_checked_and_the_secret_never_printed() {
        let c = Config::parse(
            "[storage]\nbackend = \"s3\"\nbucket = \"wharf\"\nendpoint = \"http://127.0.0.1:3900\"\n\
             region = \"garage\"\nprefix = \"prod/\"\npath_style = true\naccess_key_id = \"GK1\"\n\
             secret_access_key = \"very-secret\"\n",
            Path::new("f"),
        )
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.storage.backend, StorageBackend::S3);
        assert!(!format!("{c:?}").contains("very-secret"));
        let keys = |toml: &str| -> Vec<String> {
            Config::parse(toml, Path::new("f")).unwrap().validate().into_iter().map(|i| i.key).collect()
        };
        assert_eq!(keys("[storage]\nbackend = \"s3\"\n"), ["storage.bucket"]);
        assert_eq!(
            keys("[storage]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"ftp://x\"\nprefix = \"/abs\"\naccess_key_id = \"k\"\n"),
            ["storage.endpoint", "storage.prefix", "storage.access_key_id"]
        );
        assert_eq!(keys("[storage]\nbucket = \"b\"\n"), ["storage.bucket"], "S3 keys without backend = s3");
        assert!(Config::parse("[storage]\nbackend = \"gcs\"\n", Path::new("f")).is_err());
        assert_eq!(
            keys("[storage]\nbackend = \"s3\"\nbucket = \"b\"\nredirect = true\nredirect_expiry = \"8d\"\n"),
            ["storage.redirect_expiry"]
        );
        assert_eq!(keys("[storage]\nredirect = true\n"), ["storage.redirect"]);
    }

    #[test]
    fn scrub_section() {
        assert!(Config::default().scrub.is_none(), "no [scrub] section: no background scrub");
        let c = Config::parse("[scrub]\nevery = \"24h\"\nrate = \"1GiB\"\n", Path::new("f")).unwrap();
        let s = c.scrub.as_ref().unwrap();
        assert_eq!((s.every().unwrap().as_secs(), s.rate().unwrap()), (86_400, 1 << 30));
        let c = Config::parse("[scrub]\nevery = \"1s\"\n", Path::new("f")).unwrap();
        assert_eq!(c.scrub.as_ref().unwrap().rate().unwrap(), 50 << 20, "rate defaults to 50MiB");
        let c = Config::parse("[scrub]\nevery = \"0s\"\nrate = \"fast\"\n", Path::new("f")).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["scrub.every", "scrub.rate"]);
    }

    #[test]
    fn gc_section() {
        assert!(Config::default().gc.is_none(), "no [gc] section: no scheduled collection");
        let c = Config::parse("[gc]\nevery = \"1h\"\n", Path::new("f")).unwrap();
        let gc = c.gc.as_ref().unwrap();
        assert_eq!(gc.every().unwrap(), Some(std::time::Duration::from_secs(3600)));
        assert_eq!(gc.grace().unwrap(), std::time::Duration::from_secs(3600), "grace defaults to 1h");
        let c = Config::parse("[gc]\nevery = \"1s\"\ngrace = \"0s\"\n", Path::new("f")).unwrap();
        assert_eq!(c.gc.as_ref().unwrap().grace().unwrap(), std::time::Duration::ZERO);
        assert_eq!(c.validate(), Vec::new());
        let c = Config::parse("[gc]\nevery = \"0s\"\ngrace = \"soon\"\n", Path::new("f")).unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["gc.every", "gc.grace"]);
        let e = Config::parse("[gc]\nevry = \"1h\"\n", Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("w.toml") && e.contains("evry"), "{e}");
    }

    #[test]
    fn mirror_budget() {
        assert!(Config::default().mirror.is_none());
        let text = "[mirror]\nmax_bytes = \"50GiB\"\n\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://r\"\nmax_bytes = 1048576\n";
        let c = Config::parse(text, Path::new("f")).unwrap();
        assert_eq!(c.validate(), Vec::new());
        assert_eq!(c.mirror.as_ref().unwrap().max_bytes().unwrap(), Some(50 << 30));
        assert_eq!(c.upstreams[0].max_bytes().unwrap(), Some(1 << 20));
        let text = "[mirror]\nmax_bytes = \"lots\"\n\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://r\"\nmax_bytes = \"5 parsecs\"\n";
        let issues = Config::parse(text, Path::new("f")).unwrap().validate();
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["mirror.max_bytes", "upstream[0].max_bytes"]);
        assert!(issues[0].reason.contains("\"lots\"") && issues[1].reason.contains("unknown unit"), "{issues:?}");
        let e = Config::load_text("[mirror]\nmax_bytes = \"0\"\n").unwrap_err().to_string();
        assert!(e.contains("w.toml") && e.contains("mirror.max_bytes") && e.contains("more than 0"), "{e}");
        let e = Config::parse("[mirror]\nmax_byte = 1\n", Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("w.toml") && e.contains("max_byte"), "{e}");
    }

    impl Config {
        fn load_text(text: &str) -> Result<Config, ConfigError> {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("w.toml");
            std::fs::write(&f, text).unwrap();
            Config::load(&f)
        }
    }

    #[test]
    fn tls_section() {
        let text =
            "[server.tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\nclient_ca_file = \"clients-ca.crt\"\n";
        let c = Config::parse(text, Path::new("f")).unwrap();
        let tls = c.server.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, Path::new("tls.crt"));
        assert_eq!(tls.client_ca_file.as_deref(), Some(Path::new("clients-ca.crt")));
        assert!(tls.client_cert_required(), "mTLS is required unless configured optional");
        assert_eq!(tls.reload_interval(), std::time::Duration::from_secs(DEFAULT_TLS_RELOAD_SECS));
        assert_eq!(c.validate(), Vec::new());

        let text =
            "[server.tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\nclient_auth = \"optional\"\n";
        assert!(!Config::parse(text, Path::new("f")).unwrap().server.tls.unwrap().client_cert_required());

        let e = Config::parse("[server.tls]\ncert_file = \"c\"\n", Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("w.toml") && e.contains("key_file"), "{e}");
        let e = Config::parse(
            "[server.tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_auth = \"maybe\"\n",
            Path::new("f"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("client_auth") || e.contains("maybe"), "{e}");

        let text =
            "[server.tls]\ncert_file = \"\"\nkey_file = \"k\"\nclient_auth = \"required\"\nreload_interval_secs = 0\n";
        let keys: Vec<String> =
            Config::parse(text, Path::new("f")).unwrap().validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["server.tls.cert_file", "server.tls.client_auth", "server.tls.reload_interval_secs"]);
    }

    #[test]
    fn precedence() {
        let file =
            Config::parse("[server]\nlisten = \"127.0.0.1:6000\"\n[storage]\ndata_dir = \"/file\"\n", Path::new("f"))
                .unwrap();
        let s = Settings::resolve(file.clone(), Overrides::default()).unwrap();
        assert_eq!((s.listen.port(), s.data_dir.to_str().unwrap()), (6000, "/file"));
        let s = Settings::resolve(
            file,
            Overrides { listen: Some("127.0.0.1:7000".into()), data_dir: Some("/flag".into()) },
        )
        .unwrap();
        assert_eq!((s.listen.port(), s.data_dir.to_str().unwrap()), (7000, "/flag"));
        let s = Settings::resolve(Config::default(), Overrides::default()).unwrap();
        assert_eq!((s.listen.to_string().as_str(), s.data_dir.to_str().unwrap()), (DEFAULT_LISTEN, DEFAULT_DATA_DIR));
        assert!(Settings::resolve(Config::default(), Overrides { listen: Some("x".into()), data_dir: None }).is_err());
    }
}
