//! `wharf images scan|lock|rewrite`: find the image references of builds and deployments, pin them to digests
//! resolved through Wharf, and rewrite them to Wharf's name and/or digests (the logic is in `crate::images`).

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use clap::Args;
use sha2::Digest as _;

use crate::images::scan::{self, Found, Kind};
use crate::images::{Lock, Locked, Rewrite};

/// The files to read.
#[derive(Debug, Args)]
pub struct Inputs {
    /// Files or directories (searched for Dockerfiles, Containerfiles and YAML), or `-` for standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// `NAME=VALUE` overriding a Dockerfile `ARG` default (repeatable), as `docker build --build-arg`.
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    build_args: Vec<String>,
}

/// One input file with what was found in it.
struct Scanned {
    /// Display name (`-` for stdin).
    name: String,
    path: Option<PathBuf>,
    kind: Kind,
    text: String,
    found: Vec<Found>,
}

/// Files under `dir` that can hold image references (hidden directories and `target/`, `node_modules/`,
/// `.git/` are skipped).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if e.file_type()?.is_dir() {
            if !name.starts_with('.') && name != "node_modules" && name != "target" {
                walk(&path, out)?;
            }
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("dockerfile")
            || lower.starts_with("containerfile")
            || lower.ends_with(".dockerfile")
            || lower.ends_with(".yaml")
            || lower.ends_with(".yml")
        {
            out.push(path);
        }
    }
    Ok(())
}

impl Inputs {
    fn read(&self) -> Result<Vec<Scanned>, String> {
        let mut build_args = HashMap::new();
        for a in &self.build_args {
            let (k, v) = a.split_once('=').ok_or_else(|| format!("--build-arg {a:?}: expected NAME=VALUE"))?;
            build_args.insert(k.to_owned(), v.to_owned());
        }
        let mut out = Vec::new();
        for p in &self.paths {
            if p.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(|e| format!("standard input: {e}"))?;
                let kind = scan::kind_of("-", &text);
                out.push(Scanned { name: "-".into(), path: None, kind, text, found: Vec::new() });
                continue;
            }
            let mut files = Vec::new();
            if p.is_dir() {
                walk(p, &mut files).map_err(|e| format!("{}: {e}", p.display()))?;
            } else {
                files.push(p.clone());
            }
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                let name = f.display().to_string();
                let kind = scan::kind_of(&name, &text);
                out.push(Scanned { name, path: Some(f), kind, text, found: Vec::new() });
            }
        }
        for s in &mut out {
            let (found, skipped) = scan::scan(s.kind, &s.text, &build_args);
            for k in skipped {
                eprintln!("warning: {}:{}: {:?} skipped: {}", s.name, k.line, k.written, k.reason);
            }
            s.found = found;
        }
        Ok(out)
    }
}

/// `wharf images scan`: one line per reference, `reference<TAB>file:line`.
pub fn scan(inputs: &Inputs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    for s in inputs.read()? {
        for f in &s.found {
            println!("{}\t{}:{}", f.reference, s.name, f.line);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where and how to reach Wharf.
#[derive(Debug, Args)]
pub struct Server {
    /// Wharf's URL (`http://127.0.0.1:5000`); references resolve through it, so through its mirror.
    #[arg(long, value_name = "URL")]
    server: String,
    /// File with a secret for Basic credentials (a robot token or a password).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// User name sent with the secret.
    #[arg(long, value_name = "NAME", default_value = "robot")]
    user: String,
}

const ACCEPT: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Resolve every reference found to its digest (and each platform's) through Wharf.
async fn resolve(server: &Server, scanned: &[Scanned]) -> Result<Lock, String> {
    let base = server.server.trim_end_matches('/');
    let url = reqwest::Url::parse(base).map_err(|e| format!("--server {base:?}: {e}"))?;
    let own = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_owned(),
    };
    let auth = match &server.token_file {
        Some(p) => {
            let secret = std::fs::read_to_string(p).map_err(|e| format!("--token-file {}: {e}", p.display()))?;
            let pair = format!("{}:{}", server.user, secret.trim());
            Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
        }
        None => None,
    };
    let http = reqwest::Client::builder().build().map_err(|e| e.to_string())?;
    let mut lock = Lock { version: 1, images: Default::default() };
    for s in scanned {
        for f in &s.found {
            let key = crate::images::lock_key(&crate::images::original(&f.reference, Some(&own)));
            let source = format!("{}:{}", s.name, f.line);
            if let Some(l) = lock.images.get_mut(&key) {
                l.sources.push(source);
                continue;
            }
            let r = crate::images::original(&f.reference, Some(&own));
            let path = if r.registry == own {
                r.repo.to_string()
            } else {
                format!("{}/{}", crate::policy::routing::cache_host(&r.registry), r.repo)
            };
            let reference = match (&r.digest, &r.tag) {
                (Some(d), _) => d.to_string(),
                (None, Some(t)) => t.to_string(),
                (None, None) => "latest".into(),
            };
            let mut req = http.get(format!("{base}/v2/{path}/manifests/{reference}")).header("Accept", ACCEPT);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let resp = req.send().await.map_err(|e| format!("{key}: {e}"))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("{key} ({source}): Wharf answered {status}"));
            }
            let media_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let header_digest =
                resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = resp.bytes().await.map_err(|e| format!("{key}: {e}"))?;
            let computed = format!("sha256:{}", hex(&sha2::Sha256::digest(&body)));
            let digest = header_digest.unwrap_or_else(|| computed.clone());
            if digest.starts_with("sha256:") && digest != computed {
                return Err(format!("{key}: the manifest's bytes do not hash to {digest}"));
            }
            let mut platforms = std::collections::BTreeMap::new();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                for m in v["manifests"].as_array().into_iter().flatten() {
                    let p = &m["platform"];
                    let (Some(os), Some(arch)) = (p["os"].as_str(), p["architecture"].as_str()) else { continue };
                    let name = match p["variant"].as_str() {
                        Some(var) => format!("{os}/{arch}/{var}"),
                        None => format!("{os}/{arch}"),
                    };
                    if let Some(d) = m["digest"].as_str() {
                        platforms.insert(name, d.to_owned());
                    }
                }
            }
            lock.images.insert(key, Locked { digest, media_type, platforms, sources: vec![source] });
        }
    }
    Ok(lock)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `wharf images lock`: write the lock file, or with `check` compare it with a fresh resolution.
pub fn lock(
    inputs: &Inputs,
    server: &Server,
    output: &Path,
    check: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let scanned = inputs.read()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let now = rt.block_on(resolve(server, &scanned))?;
    if check {
        let text = std::fs::read_to_string(output).map_err(|e| format!("{}: {e}", output.display()))?;
        let old = Lock::parse(&text).map_err(|e| format!("{}: {e}", output.display()))?;
        let problems = old.problems(&now);
        if problems.is_empty() {
            println!("{}: every reference is locked and current ({} images)", output.display(), now.images.len());
            return Ok(ExitCode::SUCCESS);
        }
        for p in &problems {
            println!("{p}");
        }
        return Ok(ExitCode::from(1));
    }
    let text = serde_json::to_string_pretty(&now)? + "\n";
    write_atomic(output, &text)?;
    println!("{}: {} images locked", output.display(), now.images.len());
    Ok(ExitCode::SUCCESS)
}

/// `wharf images rewrite`: rewrite references in place (standard input to standard output).
pub fn rewrite(
    inputs: &Inputs,
    registry: Option<String>,
    pin: Option<&Path>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if registry.is_none() && pin.is_none() {
        return Err("nothing to do: give --registry, --pin, or both".into());
    }
    if let Some(r) = &registry {
        if !oci::reference::valid_host(r) {
            return Err(format!("--registry {r:?}: expected host[:port]").into());
        }
    }
    let pins = match pin {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(Lock::parse(&text).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let how = Rewrite { registry, pins };
    for s in inputs.read()? {
        let (text, changed) = how.apply(&s.text, &s.found);
        let literal = s.found.iter().filter(|f| f.span.is_none()).count();
        if literal > 0 {
            eprintln!("note: {}: {literal} reference(s) written through variables were left as they are", s.name);
        }
        match &s.path {
            None => print!("{text}"),
            Some(p) if changed > 0 => {
                write_atomic(p, &text)?;
                eprintln!("{}: {changed} reference(s) rewritten", s.name);
            }
            Some(_) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let perms = std::fs::metadata(path).ok().map(|m| m.permissions());
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        if let Some(p) = perms {
            f.set_permissions(p)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("write {}: {e}", path.display()))
}
