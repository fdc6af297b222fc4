//! Test fixtures: a real `wharf serve` process on an OS-picked loopback port, and a small HTTP client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use oci::Digest;
use reqwest::{Method, StatusCode};

/// A running `wharf serve`; killed when dropped (and, via PDEATHSIG, when the test process dies).
pub struct Server {
    child: Child,
    pub url: String,
    pub addr: String,
    _dir: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
}

pub fn wharf_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wharf")
}

/// Bytes of every file under `dir` (0 when it does not exist).
pub fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                bytes_under(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Run `wharf ARGS` to completion with no `WHARF_*` settings from the environment and quiet logs.
pub fn wharf_cli(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(wharf_bin());
    c.args(args).env_remove("WHARF_CONFIG").env_remove("WHARF_LISTEN").env_remove("WHARF_DATA_DIR");
    c.env("RUST_LOG", "warn");
    c.output().unwrap()
}

/// Make the child die with the test thread that started it, so no server outlives its test.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Server {
    /// Start with a fresh temp data dir.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = Server::start_with(&data, &[]);
        s._dir = Some(dir);
        s
    }

    /// Start with a fresh temp data dir and this TOML configuration.
    pub fn start_config(toml: &str) -> Server {
        Server::start_config_env(toml, &[])
    }

    /// [`Server::start_config`] with extra environment variables.
    pub fn start_config_env(toml: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("wharf.toml");
        std::fs::write(&cfg, toml).unwrap();
        let data = dir.path().join("data");
        let mut s = Server::start_env(&data, &["--config", cfg.to_str().unwrap()], env);
        s._dir = Some(dir);
        s
    }

    /// A counter from `/metrics`, summed over label sets that contain every `label` fragment.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> u64 {
        let text = self.client().get("/metrics").await.body;
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Start on `data_dir` with extra arguments after `serve`.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_env(data_dir, extra, &[])
    }

    /// [`Server::start_with`] with extra environment variables.
    pub fn start_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(wharf_bin());
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("WHARF_CONFIG")
            .env_remove("WHARF_LISTEN")
            .env_remove("WHARF_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start wharf");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("wharf listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, url: format!("http://{addr}"), addr, _dir: None, data_dir: data_dir.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size of the server so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    }

    pub fn client(&self) -> Client {
        Client { base: self.url.clone(), http: crate::common::http().build().unwrap() }
    }

    /// Send SIGTERM and wait: graceful shutdown must end the process on its own.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), libc::SIGTERM);
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Thin HTTP helper over reqwest for registry calls.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The first OCI error code of an error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.body))
            .to_owned()
    }
}

impl Client {
    pub async fn req(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap();
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path, &[], None).await
    }

    /// Monolithic blob push; returns the digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r =
            self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], Some(bytes.to_vec())).await;
        assert_eq!(r.status, StatusCode::CREATED, "push blob: {:?}", r.body);
        d
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Resp {
        self.req(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            Some(bytes.to_vec()),
        )
        .await
    }
}

/// `<shared>/<sub>` when it exists, where `<shared>` is the `shared/` folder next to the project root (three
/// levels above this crate), else `$WHARF_SHARED_DIR`. Tiers that need it (conformance suites, third-party
/// client binaries) call this and skip with a message on `None`, so a user's machine still runs everything
/// else.
pub fn shared_path(sub: &str) -> Option<PathBuf> {
    let near = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let root = if near.is_dir() { near } else { PathBuf::from(std::env::var_os("WHARF_SHARED_DIR")?) };
    let p = root.join(sub);
    p.exists().then_some(p)
}

impl Server {
    /// `kill -9` and reap: no shutdown code runs; the data directory stays for a restart.
    pub fn kill_hard(mut self) -> std::process::ExitStatus {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

/// The HTTP client builder every test uses: a stalled connection or a response that stops arriving fails the
/// request after two minutes instead of hanging the test (large transfers keep flowing, so no total limit).
pub fn http() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(120))
}

/// Run `cmd` to completion like [`Command::output`], but kill it and fail the test when it takes longer than
/// `limit` (a third-party client that hangs must not hold the test run).
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> std::process::Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = (
        std::thread::spawn(move || {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut b).map(|_| b).unwrap_or_default()
        }),
        std::thread::spawn(move || {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut err, &mut b).map(|_| b).unwrap_or_default()
        }),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = readers.1.join().unwrap_or_default();
            panic!("{cmd:?} did not finish within {limit:?}; stderr: {}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output { status, stdout: readers.0.join().unwrap(), stderr: readers.1.join().unwrap() }
}
