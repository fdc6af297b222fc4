//! CNCF distribution 2.8 (Debian's `docker-registry`) as a reference registry and reference pull-through
//! cache: filesystem storage in a temp dir, deletes enabled, optional htpasswd Basic auth, optional proxy mode.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use reqwest::StatusCode;

use super::token_proxy::TokenProxy;
use super::{basic_auth_client, free_port, http_probe, log_tail, push_image, require_tool, wait_until, ChildGuard};
use crate::common::{die_with_parent, Client, Server};
use crate::images::{multi_arch, PLATFORMS};

/// The Basic-auth user of `DistributionOpts::basic_auth`.
pub const USER: &str = "wharf";
/// Its password.
pub const PASSWORD: &str = "secret";
/// htpasswd line for USER/PASSWORD, precomputed so no htpasswd tool is needed: bcrypt of "secret" at cost 4
/// (the minimum). distribution checks the hash on every request; at cost 12
/// (`$2b$12$eyx5e0Ybv7g1eawewJDYVuHNP/iyi9ggVA.FClam4pTY0tbZmlzVm`, also valid) that is ~0.28 s of CPU each.
pub const HTPASSWD: &str = "wharf:$2b$04$MRbHVnqxOSBCSFiF.wBFHe90SJdwY5Y9pCvI0oOfuiXW3QciqboW2";

/// Upstream of a pull-through cache (`proxy:` section). distribution 2.8 only uses `username`/`password` for
/// Bearer-token upstreams: at start-up it GETs `<url>/v2/` once and files the credentials under the challenge's
/// token realm, so the upstream must already be up, and a Basic-auth upstream is sent no credentials at all.
#[derive(Clone, Debug)]
pub struct Remote {
    /// e.g. `http://127.0.0.1:1234` (no `/v2`)
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct DistributionOpts {
    /// Require HTTP Basic auth (USER / PASSWORD) on every `/v2/` request.
    pub basic_auth: bool,
    /// Run as a pull-through cache of this registry (distribution then refuses pushes).
    pub proxy: Option<Remote>,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running `docker-registry serve`; killed when dropped.
pub struct Distribution {
    _child: ChildGuard,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    /// `127.0.0.1:<port>`
    pub addr: String,
    pub opts: DistributionOpts,
    /// Combined stdout/stderr of the registry.
    pub log_path: PathBuf,
    /// Storage root (`storage.filesystem.rootdirectory`).
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Distribution {
    pub fn start(opts: DistributionOpts) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("registry.log");
        // The port is picked by binding and releasing, so another process may grab it first: retry then. And
        // so that a stranger on that port is not mistaken for this registry, every response of this one carries
        // an instance marker header (`http.headers`).
        for attempt in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let marker = format!("{}-{attempt}-{:p}", std::process::id(), &dir);
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(&opts, &addr, dir.path(), &marker)).unwrap();
            let mut cmd = require_tool("docker-registry", "docker-registry");
            let log = File::create(&log_path).unwrap();
            cmd.arg("serve").arg(&config).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
            // REGISTRY_* variables override the config file.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            die_with_parent(&mut cmd);
            let mut child = ChildGuard(cmd.spawn().expect("start docker-registry"));
            let mut in_use = false;
            let expect = format!("{MARKER_HEADER}: {marker}");
            wait_until("docker-registry", &mut child.0, &log_path, Duration::from_secs(20), || {
                // 401 when auth is on, 200 otherwise.
                let probe = if opts.tls.is_some() { https_probe(&addr) } else { http_probe(&addr, "/v2/") };
                if let Some((200 | 401, head)) = probe {
                    if head.contains(&expect) {
                        return true;
                    }
                }
                in_use = std::fs::read_to_string(&log_path).unwrap_or_default().contains("address already in use");
                in_use
            });
            if in_use {
                continue;
            }
            let scheme = if opts.tls.is_some() { "https" } else { "http" };
            return Distribution {
                _child: child,
                url: format!("{scheme}://{addr}"),
                addr,
                opts,
                log_path,
                data_dir,
                _dir: dir,
            };
        }
        panic!("docker-registry: no free port after 5 attempts; log:\n{}", log_tail(&log_path));
    }

    /// A client for this registry, sending USER/PASSWORD as Basic auth when auth is on.
    pub fn client(&self) -> Client {
        if self.opts.basic_auth {
            basic_auth_client(&self.url, USER, PASSWORD)
        } else {
            Client { base: self.url.clone(), http: crate::common::http().build().unwrap() }
        }
    }

    /// Everything the registry logged so far (level warn and up, no access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// `curl -k` the TLS endpoint: status and lower-cased response head.
fn https_probe(addr: &str) -> Option<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "2", "-D", "-", "-o", "/dev/null", &format!("https://{addr}/v2/")])
        .output()
        .ok()?;
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head))
}

/// A throw-away CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI:
/// returns (CA PEM, server certificate PEM, server key PEM), all inside `dir`.
pub fn test_ca(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = require_tool("openssl", "openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=wharf-test-ca",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// Response header (lower case) naming the instance, so readiness polling knows it reached this registry.
const MARKER_HEADER: &str = "x-wharf-test-instance";

fn config_yaml(opts: &DistributionOpts, addr: &str, dir: &std::path::Path, marker: &str) -> String {
    // YAML double-quoted strings take JSON escapes, so JSON-encode every interpolated value.
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: wharf-test-secret\n  headers:\n    {MARKER_HEADER}: [{marker}]\n",
        root = q(&dir.join("data").to_string_lossy()),
        addr = q(addr),
        marker = q(marker),
    );
    if let Some((cert, key)) = &opts.tls {
        y += &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            q(&cert.to_string_lossy()),
            q(&key.to_string_lossy())
        );
    }
    if opts.basic_auth {
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{HTPASSWD}\n")).unwrap();
        y += &format!("auth:\n  htpasswd:\n    realm: \"wharf-test\"\n    path: {}\n", q(&htpasswd.to_string_lossy()));
    }
    if let Some(remote) = &opts.proxy {
        y += &format!("proxy:\n  remoteurl: {}\n", q(&remote.url));
        if let Some(u) = &remote.username {
            y += &format!("  username: {}\n", q(u));
        }
        if let Some(p) = &remote.password {
            y += &format!("  password: {}\n", q(p));
        }
    }
    y
}

#[tokio::test]
async fn distribution_with_basic_auth_takes_a_push_and_serves_it_back() {
    let reg = Distribution::start(DistributionOpts { basic_auth: true, ..Default::default() });
    assert_eq!(reg.url, format!("http://{}", reg.addr));
    let anon = crate::common::http().build().unwrap();

    // Unauthenticated: 401 with a Basic challenge.
    let r = anon.get(format!("{}/v2/", reg.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Basic "), "challenge: {challenge}");
    assert!(challenge.contains(r#"realm="wharf-test""#), "challenge: {challenge}");
    // Wrong password: still 401. Right one (the precomputed bcrypt line): 200.
    let wrong = basic_auth_client(&reg.url, USER, "not-the-password");
    assert_eq!(wrong.get("/v2/").await.status, StatusCode::UNAUTHORIZED);
    let c = reg.client();
    assert_eq!(c.get("/v2/").await.status, StatusCode::OK, "htpasswd line must accept {USER}/{PASSWORD}");

    let img = multi_arch(31, &PLATFORMS[..2], false, 2_000);
    push_image(&c, &img, "ext/dist", "v1").await;

    let r = c.req(reqwest::Method::GET, "/v2/ext/dist/manifests/v1", &[("accept", &img.index.media_type)], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &img.index.bytes[..], "index comes back byte for byte");
    assert_eq!(r.header("docker-content-digest"), Some(img.index.digest.to_string()));
    let m = &img.manifests[1];
    // distribution 2.8 answers MANIFEST_UNKNOWN for an OCI manifest unless Accept lists the OCI type.
    let path = format!("/v2/ext/dist/manifests/{}", m.digest);
    assert_eq!(c.get(&path).await.status, StatusCode::NOT_FOUND);
    let r = c.req(reqwest::Method::GET, &path, &[("accept", &m.media_type)], None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(&r.body[..], &m.bytes[..]);
    let r = c.get(&format!("/v2/ext/dist/blobs/{}", img.blobs[0].digest)).await;
    assert_eq!(&r.body[..], &img.blobs[0].bytes[..]);
    // Unauthenticated reads of the pushed content are refused too.
    let r = anon.get(format!("{}/v2/ext/dist/manifests/v1", reg.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(reg.data_dir.join("docker/registry/v2/repositories/ext/dist").is_dir(), "stored under data_dir");
    assert!(reg.log().contains(r#"error authenticating user \"wharf\""#), "the log captures the refused login");

    // Proxy mode: a pull-through cache of a Wharf behind the Bearer-token proxy, logging in with credentials.
    let wharf = Server::start();
    let up = multi_arch(32, &PLATFORMS[..2], false, 2_000);
    up.push(&wharf.client(), "ext/cached", "v1").await;
    let front = TokenProxy::start(&wharf.url, Some(USER), Some(PASSWORD));
    let remote = Remote { url: front.url.clone(), username: Some(USER.into()), password: Some(PASSWORD.into()) };
    let cache = Distribution::start(DistributionOpts { proxy: Some(remote), ..Default::default() });
    let cc = cache.client();
    let r =
        cc.req(reqwest::Method::GET, "/v2/ext/cached/manifests/v1", &[("accept", &up.index.media_type)], None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}\n{}", String::from_utf8_lossy(&r.body), cache.log());
    assert_eq!(&r.body[..], &up.index.bytes[..], "the cache serves the upstream index byte for byte");
    let b = &up.blobs[3];
    let r = cc.get(&format!("/v2/ext/cached/blobs/{}", b.digest)).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b.bytes[..]));
    assert!(front.stats.tokens() >= 1 && front.stats.blob_gets.load(SeqCst) >= 1, "{:?}", front.stats);
    // Pushes are refused in proxy mode.
    let r = cc.req(reqwest::Method::POST, "/v2/ext/cached/blobs/uploads/", &[], None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{:?}", String::from_utf8_lossy(&r.body));
}
