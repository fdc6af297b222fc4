//! Configuration: serde data only. A TOML file (`--config`), then `WHARF_*` environment variables, then
//! command-line flags, each overriding the one before; defaults live in `impl Default` and nowhere else.
//!
//! Unknown keys are errors, and every error names the file, the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod sync;
pub mod upstream;

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
}

/// `[storage]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `data_dir = "/var/lib/wharf"`: root of the filesystem store.
    pub data_dir: Option<PathBuf>,
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
        let mut out = Vec::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            out.extend(u.issues(&format!("upstream[{i}]")));
            if self.upstreams[..i].iter().any(|o| o.name == u.name) {
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
        assert_eq!(c.validate(), Vec::new(), "the example is valid");
        assert_eq!((c.upstreams.len(), c.syncs.len()), (2, 2));
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
