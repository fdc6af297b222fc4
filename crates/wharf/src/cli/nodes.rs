//! `wharf nodes config` and `wharf nodes apply`: write or install the runtime configuration that points nodes
//! and builders at Wharf (the generators are in `crate::nodes`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::nodes::{File, Format, Nodes, CONTAINERD_CERTS_DIR};

/// What both subcommands take.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Wharf's URL as the nodes reach it (`https://wharf.example:5000`).
    #[arg(long, value_name = "URL")]
    server: String,
    /// containerd, docker, podman (or cri-o), k3s (or rke2), buildkit, kind.
    #[arg(long, value_name = "FORMAT")]
    format: String,
    /// PEM file of the CA that signed Wharf's certificate (installed beside the files that use it).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// File holding the secret nodes send (a robot token from `wharf token create`); never on the command line.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// User name sent with the token [default: robot].
    #[arg(long, value_name = "NAME", default_value = "robot")]
    user: String,
    /// Also route every registry Wharf does not mirror through it (containerd `_default/hosts.toml`).
    #[arg(long)]
    default_host: bool,
    /// No fallback to the origin registry when Wharf does not answer (air-gapped sites).
    #[arg(long)]
    no_fallback: bool,
    /// Where containerd's certs.d tree lives on the node.
    #[arg(long, value_name = "DIR", default_value = CONTAINERD_CERTS_DIR)]
    certs_dir: String,
}

impl NodeArgs {
    fn nodes(&self, config: &Config) -> Result<(Format, Nodes), String> {
        let format = Format::parse(&self.format)?;
        let server = self.server.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&server).map_err(|e| format!("--server {server:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.path() != "/" {
            return Err(format!("--server {server:?}: expected http(s)://host[:port] without a path"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("--server must not carry credentials (use --token-file)".into());
        }
        let ca_pem = match &self.ca {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("--ca {}: {e}", p.display()))?;
                if !text.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!("--ca {}: not a PEM certificate", p.display()));
                }
                Some(text)
            }
            None => None,
        };
        let credentials = match &self.token_file {
            Some(p) => {
                let secret = std::fs::read_to_string(p).map_err(|e| format!("--token-file {}: {e}", p.display()))?;
                let secret = secret.trim().to_owned();
                if secret.is_empty() {
                    return Err(format!("--token-file {}: empty", p.display()));
                }
                Some((self.user.clone(), secret))
            }
            None => None,
        };
        let upstreams: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let docker_io_default = config.upstreams.iter().any(|u| u.name == "docker.io" && u.default);
        let nodes = Nodes {
            server,
            upstreams,
            docker_io_default,
            ca_pem,
            credentials,
            certs_dir: self.certs_dir.trim_end_matches('/').to_owned(),
            default_host: self.default_host,
            origin_fallback: !self.no_fallback,
        };
        Ok((format, nodes))
    }
}

/// Notes printed with the files: what the runtime needs beyond them.
fn notes(format: Format, nodes: &Nodes) -> Vec<String> {
    let mut out = Vec::new();
    if nodes.upstreams.is_empty() && format != Format::Docker {
        out.push("no [[upstream]] in the configuration: only Wharf's own name is configured".into());
    }
    match format {
        Format::Containerd => out.push(format!(
            "containerd reads {}/<registry>/hosts.toml on every pull (no restart); enabling config_path once needs \
             containerd-config-v2.toml (containerd 1.x) or -v3.toml (2.x) in its config and a restart",
            nodes.certs_dir
        )),
        Format::Docker if !nodes.docker_io_default => out.push(
            "Docker's registry-mirrors only covers Docker Hub and sends bare names, which reach Docker Hub only when \
             docker.io is Wharf's default upstream (`default = true`); not configured, so no mirror was written"
                .into(),
        ),
        Format::Docker => {
            out.push("restart dockerd to apply daemon.json (other registries are not mirrored by Docker)".into())
        }
        Format::Podman => {
            out.push("podman and skopeo read registries.conf.d on every run; CRI-O needs a reload".into())
        }
        Format::K3s => out.push("restart k3s (or rke2-server/agent) to apply registries.yaml".into()),
        Format::Buildkit => out.push("restart buildkitd to apply buildkitd.toml".into()),
        Format::Kind => out.push(
            "kind create cluster --config kind.yaml (run from this directory: certs.d is mounted by relative path)"
                .into(),
        ),
    }
    if format == Format::Containerd && nodes.credentials.is_some() {
        out.push("the hosts.toml files carry the token: keep the directory readable by root only".into());
    }
    out
}

/// `wharf nodes config`: write the files under `out`, or print them.
pub fn config(args: &NodeArgs, config: &Config, out: Option<&Path>) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (format, nodes) = args.nodes(config)?;
    let files = nodes.generate(format);
    match out {
        Some(dir) => {
            for f in &files {
                let path = dir.join(&f.path);
                write_file(&path, &f.contents, nodes.credentials.is_some())?;
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            for f in &files {
                if files.len() > 1 {
                    println!("# ==> {} <==", f.path);
                }
                print!("{}", f.contents);
            }
        }
    }
    for n in notes(format, &nodes) {
        eprintln!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `apply` installs each format's files on a node (relative to `--root`).
fn install_dir(format: Format, nodes: &Nodes) -> Result<PathBuf, String> {
    Ok(PathBuf::from(match format {
        Format::Containerd => nodes.certs_dir.trim_start_matches('/').to_owned(),
        Format::Podman => "etc/containers/registries.conf.d".into(),
        Format::K3s => "etc/rancher/k3s".into(),
        Format::Buildkit => "etc/buildkit".into(),
        Format::Docker | Format::Kind => {
            return Err(format!(
                "`nodes apply` installs containerd, podman, k3s and buildkit files; for {} use `nodes config --out`",
                format.as_str()
            ))
        }
    }))
}

/// `wharf nodes apply`: install the files under `root`, atomically and idempotently, backing up what changes.
pub fn apply(args: &NodeArgs, config: &Config, root: &Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (format, nodes) = args.nodes(config)?;
    let dir = root.join(install_dir(format, &nodes)?);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (mut changed, mut same) = (0, 0);
    let files: Vec<File> = nodes
        .generate(format)
        .into_iter()
        // The config_path fragments are instructions for the main config, not files of the tree.
        .filter(|f| !f.path.starts_with("containerd-config"))
        .collect();
    for f in &files {
        let path = dir.join(&f.path);
        match std::fs::read(&path) {
            Ok(old) if old == f.contents.as_bytes() => {
                same += 1;
                continue;
            }
            Ok(_) => {
                let backup = path.with_file_name(format!(
                    "{}.wharf-backup-{stamp}",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
                ));
                std::fs::copy(&path, &backup).map_err(|e| format!("back up {}: {e}", path.display()))?;
                eprintln!("backed up {} to {}", path.display(), backup.display());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("read {}: {e}", path.display()).into()),
        }
        write_file(&path, &f.contents, nodes.credentials.is_some())?;
        changed += 1;
        eprintln!("installed {}", path.display());
    }
    println!("{changed} file(s) installed, {same} already up to date, in {}", dir.display());
    for n in notes(format, &nodes) {
        eprintln!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Write through a temp file in the same directory, fsync, rename: a reader sees the old or the new file.
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        // Files carrying a token are readable by their owner only.
        let mode = if private { 0o600 } else { 0o644 };
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("write {}: {e}", path.display()))
}
