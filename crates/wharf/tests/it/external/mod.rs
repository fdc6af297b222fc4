//! Fixtures for third-party processes the pull-through-mirror tests compare against or drive: CNCF
//! distribution (`docker-registry`), containerd (`containerd` + `ctr`), and an in-process Bearer-token front
//! for any registry. Each fixture binds 127.0.0.1 only, on an OS-picked port, keeps its state in a temp dir and
//! kills what it started when dropped (child processes also get PDEATHSIG, so start them on the test's own
//! thread, not inside `spawn_blocking`). A missing tool is a loud panic, never a skipped test;
//! `scripts/test.sh` installs the Debian packages.

pub mod containerd;
pub mod distribution;
pub mod token_proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION};
use reqwest::StatusCode;

use crate::common::Client;
use crate::images::Image;

/// A loopback port that was free a moment ago (bound, then released). For programs that cannot be told to
/// bind port 0 and report it; callers retry on "address already in use".
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// The `Authorization: Basic …` value for `user`/`password`.
pub fn basic_auth_value(user: &str, password: &str) -> HeaderValue {
    // reqwest already knows how to encode Basic credentials; borrow that instead of another base64 dependency.
    let req = reqwest::Client::new().get("http://127.0.0.1/").basic_auth(user, Some(password)).build().unwrap();
    req.headers()[AUTHORIZATION].clone()
}

/// A `common::Client` for `base` that sends `Authorization: Basic …` on every request.
pub fn basic_auth_client(base: &str, user: &str, password: &str) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, basic_auth_value(user, password));
    let http = reqwest::Client::builder().default_headers(headers).build().unwrap();
    Client { base: base.to_owned(), http }
}

/// Push `img` with the portable two-step blob upload (POST, then PUT `?digest=` with the bytes), which every
/// registry supports; `Image::push` uses single-POST monolithic uploads, which distribution 2.8 answers with a
/// plain 202 upload session.
pub async fn push_image(c: &Client, img: &Image, repo: &str, tag: &str) {
    for b in &img.blobs {
        let r = c.req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "start upload in {repo}: {:?}", r.body);
        let location = r.header(LOCATION.as_str()).expect("upload Location");
        let mut url = reqwest::Url::parse(&c.base).unwrap().join(&location).unwrap();
        url.query_pairs_mut().append_pair("digest", &b.digest.to_string());
        let resp = c
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(b.bytes.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(status, StatusCode::CREATED, "finish upload of {}: {:?}", b.digest, resp.text().await);
    }
    for m in &img.manifests {
        let r = c.push_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes).await;
        assert_eq!(r.status, StatusCode::CREATED, "push manifest {}: {:?}", m.digest, r.body);
    }
    let r = c.push_manifest(repo, tag, &img.index.media_type, &img.index.bytes).await;
    assert_eq!(r.status, StatusCode::CREATED, "push index {tag}: {:?}", r.body);
}

/// Status code and header block (lower-cased) of a plain `GET path` over HTTP/1.0 to `addr`, or None if nothing
/// answers (yet). Blocking and runtime-free, so fixtures can poll readiness from sync code.
pub fn http_probe(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") && resp.len() < 64 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => resp.extend_from_slice(&buf[..k]),
        }
    }
    let head = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    // "http/1.1 200 ok"
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head))
}

/// A child process that is killed (SIGKILL) and reaped when dropped, also when a fixture panics half-way.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll until `ready()` is true; panic (with `what` and `log`'s tail) on timeout or when `child` exits first.
pub fn wait_until(what: &str, child: &mut Child, log: &Path, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status} before it was ready; log {}:\n{}", log.display(), log_tail(log));
        }
        if Instant::now() > deadline {
            panic!("{what} not ready after {timeout:?}; log {}:\n{}", log.display(), log_tail(log));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The last 60 lines of a log file (for panic messages).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// `Command::new(program)`, panicking with an install hint if `program` is not on PATH.
pub fn require_tool(program: &str, package: &str) -> Command {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    assert!(
        found,
        "`{program}` is required for this test but is not on PATH: install the Debian package `{package}` \
         (scripts/test.sh does)"
    );
    Command::new(program)
}
