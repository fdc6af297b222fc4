//! containerd 1.6 (Debian's `containerd` + `ctr`) as a real pull client: its own daemon on a socket in a temp
//! dir, registry routing through `hosts.toml` (`--hosts-dir`), and `ctr content fetch`, which downloads and
//! verifies manifests and blobs into the content store without unpacking (test layers are random bytes, not
//! tarballs).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{log_tail, require_tool, wait_until, ChildGuard};
use crate::common::{die_with_parent, Server};
use crate::images::{multi_arch, PLATFORMS};

/// How long one `ctr` invocation may take before it is killed and the test fails.
const CTR_TIMEOUT: Duration = Duration::from_secs(120);

/// A running containerd with its own root, state, socket and config; killed when dropped.
pub struct Containerd {
    _child: ChildGuard,
    /// The gRPC socket (`ctr --address`).
    pub socket: PathBuf,
    /// containerd's own log (level info).
    pub log_path: PathBuf,
    /// The temp dir holding root/, state/, config.toml, the socket and the log.
    pub dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a `ctr` run printed.
#[derive(Debug)]
pub struct CtrOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Containerd {
    pub fn start() -> Containerd {
        // Keep the path short: unix socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new().prefix("ctrd").tempdir().unwrap();
        let d = dir.path().to_owned();
        let socket = d.join("containerd.sock");
        let log_path = d.join("containerd.log");
        let config = d.join("config.toml");
        std::fs::write(&config, config_toml(&d, &socket)).unwrap();
        let mut cmd = require_tool("containerd", "containerd");
        let log = File::create(&log_path).unwrap();
        cmd.arg("--config")
            .arg(&config)
            .arg("--address")
            .arg(&socket)
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        die_with_parent(&mut cmd);
        let mut child = ChildGuard(cmd.spawn().expect("start containerd"));
        wait_until("containerd", &mut child.0, &log_path, Duration::from_secs(30), || {
            socket.exists() && run_ctr(&socket, &d, &log_path, &["version"]).success
        });
        Containerd { _child: child, socket, log_path, dir: d, _dir: dir }
    }

    /// Run `ctr --address <socket> <args…>` (namespace `default`) with a timeout; never panics on failure.
    pub fn try_ctr(&self, args: &[&str]) -> CtrOutput {
        run_ctr(&self.socket, &self.dir, &self.log_path, args)
    }

    /// `ctr <args…>`, panicking (with its output and containerd's log) unless it succeeds; returns stdout.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = self.try_ctr(args);
        assert!(
            out.success,
            "ctr {args:?} failed\nstdout:\n{}\nstderr:\n{}\ncontainerd log:\n{}",
            out.stdout,
            out.stderr,
            log_tail(&self.log_path)
        );
        out.stdout
    }

    /// `ctr content fetch --hosts-dir <hosts_dir> [--platform p | --all-platforms] <reference>`: resolve and
    /// download (no unpacking) through the hosts.toml routing. Does not panic; check `success`.
    pub fn try_fetch(
        &self,
        hosts_dir: &Path,
        reference: &str,
        platform: Option<&str>,
        all_platforms: bool,
    ) -> CtrOutput {
        let hosts = hosts_dir.to_str().unwrap();
        let mut args = vec!["content", "fetch", "--hosts-dir", hosts];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        if all_platforms {
            args.push("--all-platforms");
        }
        args.push(reference);
        self.try_ctr(&args)
    }

    /// `try_fetch`, panicking unless it succeeds; returns ctr's output (progress lines).
    pub fn fetch(&self, hosts_dir: &Path, reference: &str, platform: Option<&str>, all_platforms: bool) -> String {
        let out = self.try_fetch(hosts_dir, reference, platform, all_platforms);
        assert!(
            out.success,
            "ctr content fetch {reference} (platform {platform:?}, all {all_platforms}) failed\nstdout:\n{}\n\
             stderr:\n{}\ncontainerd log:\n{}",
            out.stdout,
            out.stderr,
            log_tail(&self.log_path)
        );
        out.stdout + &out.stderr
    }

    /// Digests (`sha256:…`) in containerd's content store (`ctr content ls -q`).
    pub fn content_digests(&self) -> BTreeSet<String> {
        self.ctr(&["content", "ls", "-q"]).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// The digest image `reference` (e.g. `docker.io/library/demo:v1`) points at in containerd's image store,
    /// if it is registered (`ctr content fetch` registers the image it fetched).
    pub fn image_target(&self, reference: &str) -> Option<String> {
        let filter = format!("name=={reference}");
        // `ctr images ls` also complains on stderr when some platforms' content is missing; the listing is fine.
        let out = self.ctr(&["images", "ls", &filter]);
        out.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&reference)).then(|| cols.get(2).map(|d| d.to_string())).flatten()
        })
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// `ctr --address <socket> --namespace default <args…>`, output via files in `scratch` (no pipe to drain),
/// killed after CTR_TIMEOUT.
fn run_ctr(socket: &Path, scratch: &Path, log_path: &Path, args: &[&str]) -> CtrOutput {
    let out_path = scratch.join(format!("ctr-{}.out", unique()));
    let err_path = out_path.with_extension("err");
    let mut cmd = require_tool("ctr", "containerd");
    cmd.arg("--address")
        .arg(socket)
        .args(["--namespace", "default"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .env("NO_COLOR", "1");
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("run ctr");
    let deadline = Instant::now() + CTR_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ctr {args:?} still running after {CTR_TIMEOUT:?}; stderr:\n{}\ncontainerd log:\n{}",
                log_tail(&err_path),
                log_tail(log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| {
        let s = std::fs::read_to_string(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        s
    };
    CtrOutput { success: status.success(), stdout: read(&out_path), stderr: read(&err_path) }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Config version 2: own root/state/socket; only the plugins content work needs. The CRI plugin (wants CNI,
/// cgroups, a sandbox image) and the snapshotters that need specific file systems or kernel modules are off.
fn config_toml(dir: &Path, socket: &Path) -> String {
    let q = |p: &Path| serde_json::to_string(p.to_str().unwrap()).unwrap();
    format!(
        r#"version = 2
root = {root}
state = {state}
temp = {tmp}
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
        root = q(&dir.join("root")),
        state = q(&dir.join("state")),
        tmp = q(&dir.join("tmp")),
        socket = q(socket),
        ttrpc = q(&socket.with_extension("sock.ttrpc")),
        opt = q(&dir.join("opt")),
    )
}

/// Write `<dir>/<registry_host>/hosts.toml` routing pulls of `registry_host` to `mirror_url` (plain http), with
/// the fallback `server` on a closed port so nothing ever reaches the real registry. Returns the file's path.
pub fn write_hosts_toml(dir: &Path, registry_host: &str, mirror_url: &str) -> PathBuf {
    let host_dir = dir.join(registry_host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let path = host_dir.join("hosts.toml");
    // An `http://` host key is enough for plain HTTP; capabilities: the mirror may resolve tags and serve pulls.
    let toml = format!(
        "server = \"http://127.0.0.1:1\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        mirror_url.trim_end_matches('/')
    );
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test]
async fn containerd_fetches_one_platform_then_all_through_hosts_toml() {
    let s = Server::start();
    let img = multi_arch(51, PLATFORMS, false, 4_000);
    img.push(&s.client(), "library/demo", "v1").await;
    let ctrd = Containerd::start();
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(hosts.path(), "docker.io", &s.url);

    let arm64 = PLATFORMS.iter().position(|p| p.1 == "arm64").unwrap();
    let amd64 = PLATFORMS.iter().position(|p| p.1 == "amd64").unwrap();
    let out = ctrd.fetch(hosts.path(), "docker.io/library/demo:v1", Some("linux/arm64"), false);
    let have = ctrd.content_digests();
    let has = |d: &oci::Digest| have.contains(&d.to_string());
    assert!(has(&img.index.digest), "index missing after fetch; ctr said:\n{out}");
    assert!(has(&img.manifests[arm64].digest), "arm64 manifest missing; ctr said:\n{out}");
    // multi_arch pushes [layer, config] per platform.
    assert!(has(&img.blobs[2 * arm64].digest) && has(&img.blobs[2 * arm64 + 1].digest), "arm64 blobs missing");
    assert!(!has(&img.manifests[amd64].digest), "amd64 manifest fetched for --platform linux/arm64");
    assert!(!has(&img.blobs[2 * amd64].digest), "amd64 layer fetched for --platform linux/arm64");
    assert_eq!(have.len(), 4, "index + arm64 manifest, config and layer: {have:?}");
    assert_eq!(ctrd.image_target("docker.io/library/demo:v1"), Some(img.index.digest.to_string()));

    ctrd.fetch(hosts.path(), "docker.io/library/demo:v1", None, true);
    let have = ctrd.content_digests();
    for c in img.blobs.iter().chain(&img.manifests).chain([&img.index]) {
        assert!(have.contains(&c.digest.to_string()), "{} ({}) missing after --all-platforms", c.digest, c.media_type);
    }
    assert_eq!(have.len(), 1 + 3 * PLATFORMS.len());
    assert!(!ctrd.log().contains("level=error"), "containerd logged errors:\n{}", ctrd.log());
}
