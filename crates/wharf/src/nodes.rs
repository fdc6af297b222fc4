//! Node and builder configuration that points container runtimes at Wharf: one generator per runtime format,
//! all from the same facts (Wharf's URL, the upstream registry names it mirrors, an optional CA and
//! credentials). Pure text generation: the CLI writes or installs the files, the server serves them at
//! `/_wharf/nodes/<format>`.
//!
//! How each runtime reaches a mirrored upstream through Wharf:
//! - containerd (and k3s, buildkit, kind, which use its resolver) sends mirror requests with `?ns=<registry>`;
//! - podman / CRI-O use path-prefix locations (`wharf:5000/docker.io`), which Wharf routes to the upstream;
//! - Docker's `registry-mirrors` applies to Docker Hub only and sends bare names, which reach Docker Hub only
//!   when `docker.io` is Wharf's default upstream.

use std::fmt::Write as _;

use base64::Engine;

/// A runtime configuration format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `certs.d/` tree of `hosts.toml` files plus config fragments enabling `config_path`.
    Containerd,
    /// `daemon.json` with `registry-mirrors`.
    Docker,
    /// A `registries.conf.d/` drop-in (podman, CRI-O, skopeo, buildah).
    Podman,
    /// k3s / RKE2 `registries.yaml`.
    K3s,
    /// `buildkitd.toml` registry mirrors.
    Buildkit,
    /// A kind cluster config whose nodes mount the containerd `certs.d` tree.
    Kind,
}

impl Format {
    /// Every format, in the order they are documented.
    pub const ALL: [Format; 6] =
        [Format::Containerd, Format::Docker, Format::Podman, Format::K3s, Format::Buildkit, Format::Kind];

    /// Parse a command-line or URL word; the error lists the accepted ones.
    pub fn parse(s: &str) -> Result<Format, String> {
        Ok(match s {
            "containerd" => Format::Containerd,
            "docker" => Format::Docker,
            "podman" | "cri-o" | "crio" => Format::Podman,
            "k3s" | "rke2" => Format::K3s,
            "buildkit" => Format::Buildkit,
            "kind" => Format::Kind,
            _ => {
                return Err(format!(
                    "unknown format {s:?} (expected containerd, docker, podman, cri-o, k3s, rke2, buildkit or kind)"
                ))
            }
        })
    }

    /// The canonical word.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Containerd => "containerd",
            Format::Docker => "docker",
            Format::Podman => "podman",
            Format::K3s => "k3s",
            Format::Buildkit => "buildkit",
            Format::Kind => "kind",
        }
    }
}

/// What the generated files describe.
#[derive(Debug, Clone)]
pub struct Nodes {
    /// Wharf's base URL as nodes reach it (`https://wharf.example:5000`).
    pub server: String,
    /// Registry hosts Wharf mirrors (the `[[upstream]]` names: `docker.io`, `registry.k8s.io`, ...).
    pub upstreams: Vec<String>,
    /// Whether `docker.io` is Wharf's default upstream (Docker's `registry-mirrors` needs that).
    pub docker_io_default: bool,
    /// PEM of the CA that signed Wharf's certificate, installed next to the files that use it.
    pub ca_pem: Option<String>,
    /// User name and secret (a robot token) nodes send to Wharf.
    pub credentials: Option<(String, String)>,
    /// Where the containerd `certs.d` tree is installed on the node (paths inside `hosts.toml` point there).
    pub certs_dir: String,
    /// Whether to route every other registry through Wharf too (`_default/hosts.toml`, hosted content only
    /// for names Wharf does not mirror).
    pub default_host: bool,
    /// Whether containerd may fall back to the origin registry when Wharf does not answer.
    pub origin_fallback: bool,
}

/// One generated file: where it goes (relative to the output directory) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative path (`docker.io/hosts.toml`).
    pub path: String,
    /// Contents.
    pub contents: String,
}

/// Default install location of containerd's registry host configuration.
pub const CONTAINERD_CERTS_DIR: &str = "/etc/containerd/certs.d";
/// Name of the CA file written beside the configuration.
pub const CA_FILE: &str = "wharf-ca.crt";

/// A TOML basic string (quotes and backslashes escaped).
fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The origin a registry host name stands for (Docker Hub's API host differs from its name).
pub fn origin_url(host: &str) -> String {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://registry-1.docker.io".into(),
        h => format!("https://{h}"),
    }
}

impl Nodes {
    /// `host:port` of the server URL (what image references and drop-ins name).
    pub fn server_host(&self) -> &str {
        let s = self.server.split_once("://").map_or(self.server.as_str(), |(_, rest)| rest);
        s.split('/').next().unwrap_or(s)
    }

    fn plain_http(&self) -> bool {
        self.server.starts_with("http://")
    }

    fn basic(&self) -> Option<String> {
        self.credentials.as_ref().map(|(u, p)| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
    }

    /// The files of `format`.
    pub fn generate(&self, format: Format) -> Vec<File> {
        match format {
            Format::Containerd => self.containerd(),
            Format::Docker => vec![self.docker()],
            Format::Podman => vec![self.podman()],
            Format::K3s => vec![self.k3s()],
            Format::Buildkit => vec![self.buildkit()],
            Format::Kind => {
                let mut files = vec![self.kind()];
                files.extend(
                    self.containerd()
                        .into_iter()
                        .filter(|f| !f.path.starts_with("containerd-config"))
                        .map(|f| File { path: format!("certs.d/{}", f.path), contents: f.contents }),
                );
                files
            }
        }
    }

    /// One `hosts.toml` for registry `host` (or `_default`), sending pulls to Wharf.
    fn hosts_toml(&self, host: &str, dir: &str) -> String {
        let mut t = String::from("# Generated by `wharf nodes config`: pulls of this registry go through Wharf.\n");
        if host == "_default" || !self.origin_fallback {
            // No fallback: Wharf is the only host (the `server` is Wharf itself).
            let _ = writeln!(t, "server = {}", q(&self.server));
        } else {
            let _ = writeln!(t, "server = {}", q(&origin_url(host)));
        }
        let _ = writeln!(t, "\n[host.{}]", q(&self.server));
        let _ = writeln!(t, "  capabilities = [\"pull\", \"resolve\"]");
        if self.ca_pem.is_some() {
            let _ = writeln!(t, "  ca = {}", q(&format!("{}/{dir}/{CA_FILE}", self.certs_dir)));
        }
        if let Some(b) = self.basic() {
            let _ = writeln!(t, "  [host.{}.header]", q(&self.server));
            let _ = writeln!(t, "    Authorization = {}", q(&format!("Basic {b}")));
        }
        t
    }

    fn containerd(&self) -> Vec<File> {
        let mut files = Vec::new();
        let mut hosts: Vec<String> = self.upstreams.clone();
        if self.default_host {
            hosts.push("_default".into());
        }
        for host in &hosts {
            // containerd looks up `<registry host>` with the port as written (`host:port`).
            files.push(File { path: format!("{host}/hosts.toml"), contents: self.hosts_toml(host, host) });
            if let Some(ca) = &self.ca_pem {
                files.push(File { path: format!("{host}/{CA_FILE}"), contents: ca.clone() });
            }
        }
        // Wharf's own name: pushes and pulls of hosted images (`wharf:5000/team/app`) with the CA and credentials.
        let own = self.server_host().to_owned();
        let mut t = String::from("# Generated by `wharf nodes config`: Wharf's own repositories (push and pull).\n");
        let _ = writeln!(t, "server = {}", q(&self.server));
        let _ = writeln!(t, "\n[host.{}]", q(&self.server));
        let _ = writeln!(t, "  capabilities = [\"pull\", \"resolve\", \"push\"]");
        if self.ca_pem.is_some() {
            let _ = writeln!(t, "  ca = {}", q(&format!("{}/{own}/{CA_FILE}", self.certs_dir)));
        }
        if let Some(b) = self.basic() {
            let _ = writeln!(t, "  [host.{}.header]", q(&self.server));
            let _ = writeln!(t, "    Authorization = {}", q(&format!("Basic {b}")));
        }
        files.push(File { path: format!("{own}/hosts.toml"), contents: t });
        if let Some(ca) = &self.ca_pem {
            files.push(File { path: format!("{own}/{CA_FILE}"), contents: ca.clone() });
        }
        files.push(File {
            path: "containerd-config-v2.toml".into(),
            contents: format!(
                "# containerd 1.x: enable the certs.d tree (add to /etc/containerd/config.toml or an imported file).\n\
                 version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {}\n",
                q(&self.certs_dir)
            ),
        });
        files.push(File {
            path: "containerd-config-v3.toml".into(),
            contents: format!(
                "# containerd 2.x: enable the certs.d tree (add to /etc/containerd/config.toml or an imported file).\n\
                 version = 3\n\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = {}\n",
                q(&self.certs_dir)
            ),
        });
        files
    }

    fn docker(&self) -> File {
        let mut doc = serde_json::Map::new();
        if self.upstreams.iter().any(|u| u == "docker.io") && self.docker_io_default {
            doc.insert("registry-mirrors".into(), serde_json::json!([self.server]));
        }
        if self.plain_http() {
            doc.insert("insecure-registries".into(), serde_json::json!([self.server_host()]));
        }
        File {
            path: "daemon.json".into(),
            contents: serde_json::to_string_pretty(&serde_json::Value::Object(doc)).expect("json") + "\n",
        }
    }

    fn podman(&self) -> File {
        let mut t = String::from(
            "# Generated by `wharf nodes config`: a registries.conf.d drop-in (podman, CRI-O, skopeo, buildah).\n\
             # Each mirrored registry is pulled through Wharf's path-prefix location; the origin stays as fallback.\n",
        );
        for host in &self.upstreams {
            let prefix = crate::policy::routing::cache_host(host);
            let _ = writeln!(t, "\n[[registry]]\nprefix = {}\nlocation = {}", q(host), q(host));
            let _ = writeln!(t, "\n[[registry.mirror]]\nlocation = {}", q(&format!("{}/{prefix}", self.server_host())));
            if self.plain_http() {
                let _ = writeln!(t, "insecure = true");
            }
        }
        let _ = writeln!(t, "\n[[registry]]\nlocation = {}", q(self.server_host()));
        if self.plain_http() {
            let _ = writeln!(t, "insecure = true");
        }
        File { path: "wharf.conf".into(), contents: t }
    }

    /// A YAML double-quoted string (JSON escaping is valid YAML).
    fn y(s: &str) -> String {
        serde_json::to_string(s).expect("json string")
    }

    fn k3s(&self) -> File {
        let mut t = String::from(
            "# Generated by `wharf nodes config`: /etc/rancher/k3s/registries.yaml (k3s, RKE2).\nmirrors:\n",
        );
        for host in &self.upstreams {
            let _ = writeln!(t, "  {}:\n    endpoint:\n      - {}", Self::y(host), Self::y(&self.server));
        }
        let _ = writeln!(t, "  {}:\n    endpoint:\n      - {}", Self::y(self.server_host()), Self::y(&self.server));
        if self.credentials.is_some() || self.ca_pem.is_some() {
            let _ = writeln!(t, "configs:\n  {}:", Self::y(self.server_host()));
            if let Some((u, p)) = &self.credentials {
                let _ = writeln!(t, "    auth:\n      username: {}\n      password: {}", Self::y(u), Self::y(p));
            }
            if self.ca_pem.is_some() {
                let _ = writeln!(t, "    tls:\n      ca_file: {}", Self::y(&format!("/etc/rancher/k3s/{CA_FILE}")));
            }
        }
        File { path: "registries.yaml".into(), contents: t }
    }

    fn buildkit(&self) -> File {
        let mut t = String::from(
            "# Generated by `wharf nodes config`: buildkitd.toml (builders pull base images through Wharf).\n",
        );
        let own = self.server_host();
        for host in &self.upstreams {
            let _ = writeln!(t, "\n[registry.{}]\n  mirrors = [{}]", q(host), q(own));
        }
        let _ = writeln!(t, "\n[registry.{}]", q(own));
        if self.plain_http() {
            let _ = writeln!(t, "  http = true");
        }
        if self.ca_pem.is_some() {
            let _ = writeln!(t, "  ca = [{}]", q(&format!("/etc/buildkit/{CA_FILE}")));
        }
        File { path: "buildkitd.toml".into(), contents: t }
    }

    fn kind(&self) -> File {
        let mut t = String::from(
            "# Generated by `wharf nodes config`: `kind create cluster --config kind.yaml` from this directory gives\n\
             # a cluster whose every node pulls through Wharf (the certs.d tree beside this file is mounted).\n\
             # The server URL must be reachable from inside the node containers (not 127.0.0.1).\n\
             kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\ncontainerdConfigPatches:\n  - |-\n",
        );
        let _ = writeln!(
            t,
            "    [plugins.\"io.containerd.grpc.v1.cri\".registry]\n      config_path = \"/etc/containerd/certs.d\""
        );
        let _ = writeln!(
            t,
            "nodes:\n  - role: control-plane\n    extraMounts:\n      - hostPath: ./certs.d\n        containerPath: /etc/containerd/certs.d\n        readOnly: true"
        );
        File { path: "kind.yaml".into(), contents: t }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(server: &str) -> Nodes {
        Nodes {
            server: server.into(),
            upstreams: vec!["docker.io".into(), "registry.k8s.io".into(), "registry.local:5000".into()],
            docker_io_default: true,
            ca_pem: None,
            credentials: None,
            certs_dir: CONTAINERD_CERTS_DIR.into(),
            default_host: false,
            origin_fallback: true,
        }
    }

    fn file<'a>(files: &'a [File], path: &str) -> &'a str {
        &files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no {path} in {files:?}")).contents
    }

    #[test]
    fn containerd_hosts_files_parse_and_point_at_wharf() {
        let mut n = nodes("https://wharf.example:5000");
        n.ca_pem = Some("-----BEGIN CERTIFICATE-----\n".into());
        n.credentials = Some(("robot".into(), "wharf_rt_x".into()));
        n.default_host = true;
        let files = n.generate(Format::Containerd);
        let hub: toml::Value = toml::from_str(file(&files, "docker.io/hosts.toml")).unwrap();
        assert_eq!(hub["server"].as_str(), Some("https://registry-1.docker.io"));
        let host = &hub["host"]["https://wharf.example:5000"];
        assert_eq!(host["capabilities"].as_array().unwrap().len(), 2);
        assert_eq!(host["ca"].as_str(), Some("/etc/containerd/certs.d/docker.io/wharf-ca.crt"));
        assert_eq!(host["header"]["Authorization"].as_str(), Some("Basic cm9ib3Q6d2hhcmZfcnRfeA=="));
        let local: toml::Value = toml::from_str(file(&files, "registry.local:5000/hosts.toml")).unwrap();
        assert_eq!(local["server"].as_str(), Some("https://registry.local:5000"));
        let default: toml::Value = toml::from_str(file(&files, "_default/hosts.toml")).unwrap();
        assert_eq!(default["server"].as_str(), Some("https://wharf.example:5000"), "no fallback for _default");
        let own: toml::Value = toml::from_str(file(&files, "wharf.example:5000/hosts.toml")).unwrap();
        assert!(own["host"]["https://wharf.example:5000"]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str() == Some("push")));
        assert!(file(&files, "registry.k8s.io/wharf-ca.crt").starts_with("-----BEGIN"));
        let v2: toml::Value = toml::from_str(file(&files, "containerd-config-v2.toml")).unwrap();
        assert_eq!(
            v2["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"].as_str(),
            Some("/etc/containerd/certs.d")
        );
        let v3: toml::Value = toml::from_str(file(&files, "containerd-config-v3.toml")).unwrap();
        assert_eq!(v3["version"].as_integer(), Some(3));
        assert!(v3["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"].is_str());
    }

    #[test]
    fn docker_podman_buildkit_and_k3s() {
        let n = nodes("http://10.0.0.5:5000");
        let docker: serde_json::Value = serde_json::from_str(&n.generate(Format::Docker)[0].contents).unwrap();
        assert_eq!(
            docker,
            serde_json::json!({"registry-mirrors": ["http://10.0.0.5:5000"], "insecure-registries": ["10.0.0.5:5000"]})
        );
        let mut not_default = n.clone();
        not_default.docker_io_default = false;
        let docker: serde_json::Value =
            serde_json::from_str(&not_default.generate(Format::Docker)[0].contents).unwrap();
        assert!(docker.get("registry-mirrors").is_none(), "bare names would not reach Docker Hub");

        let podman: toml::Value = toml::from_str(&n.generate(Format::Podman)[0].contents).unwrap();
        let regs = podman["registry"].as_array().unwrap();
        assert_eq!(regs.len(), 4);
        assert_eq!(regs[0]["prefix"].as_str(), Some("docker.io"));
        assert_eq!(regs[0]["mirror"][0]["location"].as_str(), Some("10.0.0.5:5000/docker.io"));
        assert_eq!(regs[0]["mirror"][0]["insecure"].as_bool(), Some(true));
        assert_eq!(
            regs[2]["mirror"][0]["location"].as_str(),
            Some("10.0.0.5:5000/registry.local_5000"),
            "ports become _"
        );

        let bk: toml::Value = toml::from_str(&n.generate(Format::Buildkit)[0].contents).unwrap();
        assert_eq!(bk["registry"]["docker.io"]["mirrors"][0].as_str(), Some("10.0.0.5:5000"));
        assert_eq!(bk["registry"]["10.0.0.5:5000"]["http"].as_bool(), Some(true));

        let k3s = &n.generate(Format::K3s)[0].contents;
        assert!(k3s.contains("  \"docker.io\":\n    endpoint:\n      - \"http://10.0.0.5:5000\""), "{k3s}");
    }

    #[test]
    fn kind_config_mounts_the_certs_tree() {
        let n = nodes("http://wharf.internal:5000");
        let files = n.generate(Format::Kind);
        let kind = file(&files, "kind.yaml");
        assert!(
            kind.contains("apiVersion: kind.x-k8s.io/v1alpha4")
                && kind.contains("containerPath: /etc/containerd/certs.d")
        );
        assert!(files.iter().any(|f| f.path == "certs.d/docker.io/hosts.toml"));
        assert!(!files.iter().any(|f| f.path.contains("containerd-config")));
    }

    #[test]
    fn formats_parse() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.as_str()), Ok(f));
        }
        assert_eq!(Format::parse("cri-o"), Ok(Format::Podman));
        assert!(Format::parse("nomad").unwrap_err().contains("containerd"));
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
