//! `[server.tls]`: the real binary serving HTTPS with a throw-away CA made by openssl in each test; real
//! clients (reqwest, curl, skopeo, crane, openssl s_client, the conformance suite) over it; HTTP/2 by ALPN;
//! certificate rotation without dropping connections; mutual TLS with the client identity in the access log
//! and as a user for the access rules; bad files refused at start with exit code 2 and the key named.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{die_with_parent, output_within, wharf_bin, Client};
use crate::external::require_tool;
use crate::images::{multi_arch, PLATFORMS};

/// A throw-away PKI in a temp dir: one CA (`ca.pem`), server and client certificates signed by it.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().unwrap() };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
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
        pki
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) -> String {
        let out = require_tool("openssl", "openssl").args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Issue `<name>.pem` / `<name>.key` signed by the CA (or by `ca`, another Pki's CA) with this subject,
    /// serial, SANs and extended key usage.
    fn issue(&self, name: &str, cn: &str, serial: &str, san: &str, eku: &str) -> (PathBuf, PathBuf) {
        self.issue_subject(name, &format!("/CN={cn}"), serial, san, eku)
    }

    /// [`Pki::issue`] with a whole subject (`/O=wharf` for a certificate without a CN).
    fn issue_subject(&self, name: &str, subject: &str, serial: &str, san: &str, eku: &str) -> (PathBuf, PathBuf) {
        let (key, csr, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.cnf"));
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        std::fs::write(
            self.path(&ext),
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage={eku}\n"),
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        (self.path(&pem), self.path(&key))
    }

    pub(crate) fn server(&self, name: &str, serial: &str) -> (PathBuf, PathBuf) {
        self.issue(name, &format!("wharf-{name}"), serial, "IP:127.0.0.1,DNS:localhost", "serverAuth")
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A directory with `ca.crt`, the layout skopeo's `--*-cert-dir` reads.
    pub(crate) fn cert_dir(&self) -> PathBuf {
        let d = self.path("certs.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(self.ca(), d.join("ca.crt")).unwrap();
        d
    }
}

/// A `wharf serve` over TLS with its log (stderr, info level) captured in a file.
pub(crate) struct TlsServer {
    child: Child,
    pub(crate) addr: String,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    /// The server's data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// Start with `[server.tls]` set to `tls` (TOML key lines).
    pub(crate) fn start(tls: &str) -> TlsServer {
        TlsServer::start_with(tls, "")
    }

    /// [`TlsServer::start`] with more configuration (`[[access]]` tables…) before `[server.tls]`.
    pub(crate) fn start_with(tls: &str, extra: &str) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("wharf.toml");
        std::fs::write(&cfg, format!("{extra}\n[server.tls]\n{tls}")).unwrap();
        let log = dir.path().join("wharf.log");
        let mut cmd = Command::new(wharf_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env_remove("WHARF_CONFIG")
            .env_remove("WHARF_LISTEN")
            .env_remove("WHARF_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start wharf");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("wharf listening on ").map(str::to_owned) else {
            let _ = child.wait();
            panic!("no listening line ({line:?}); log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        TlsServer { child, url: format!("https://{addr}"), addr, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap()
    }

    /// A registry client trusting `ca`.
    fn client(&self, ca: &Path) -> Client {
        Client { base: self.url.clone(), http: https_client(ca).build().unwrap() }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https_client(ca: &Path) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    crate::common::http().add_root_certificate(ca).tls_built_in_root_certs(false).tls_info(true)
}

pub(crate) fn tls_keys(cert: &Path, key: &Path) -> String {
    format!("cert_file = {:?}\nkey_file = {:?}\n", cert.to_str().unwrap(), key.to_str().unwrap())
}

/// The serial of the certificate a server presents to a fresh connection, via `openssl s_client`.
fn presented_serial(pki: &Pki, port: &str) -> String {
    let mut s = require_tool("openssl", "openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
        .arg(pki.ca())
        .args(["-verify_return_error"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pem = String::new();
    std::io::Read::read_to_string(s.stdout.as_mut().unwrap(), &mut pem).unwrap();
    assert!(s.wait().unwrap().success(), "s_client failed: {pem}");
    let mut x = require_tool("openssl", "openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(x.stdin.as_mut().unwrap(), pem.as_bytes()).unwrap();
    drop(x.stdin.take());
    let out = x.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().trim_start_matches("serial=").to_owned()
}

/// The serial of the server certificate a reqwest response came over (its TLS info).
fn response_serial(resp: &reqwest::Response) -> Vec<u8> {
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().expect("tls_info enabled");
    info.peer_certificate().expect("a server certificate").to_vec()
}

/// Wait (polling, with a generous limit that only guards against a hang) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_with_http2_and_http11_by_alpn() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x1001");
    let s = TlsServer::start(&tls_keys(&cert, &key));

    // A client that connects and never speaks TLS does not hold up anyone else's handshake.
    let _silent = std::net::TcpStream::connect(&s.addr).unwrap();

    // reqwest trusting only the test CA; by IP SAN and by DNS SAN.
    let c = s.client(&pki.ca());
    for url in [format!("{}/v2/", s.url), format!("https://localhost:{}/v2/", s.port())] {
        let r = c.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN offers h2 and reqwest takes it: {url}");
        assert_eq!(r.headers()["docker-distribution-api-version"], "registry/2.0");
    }
    let h1 = https_client(&pki.ca()).http1_only().build().unwrap();
    let r = h1.get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));

    // curl picks the protocol by ALPN (no prior knowledge): 2 when it offers h2, 1.1 when it does not.
    let curl = |extra: &[&str]| {
        let out = require_tool("curl", "curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert"])
            .arg(pki.ca())
            .args(extra)
            .arg(format!("{}/v2/", s.url))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl(&["--http2"]), "2 200");
    assert_eq!(curl(&["--http1.1"]), "1.1 200");

    // A client that does not trust the CA is refused; plain HTTP on the TLS port gets no HTTP answer.
    assert!(crate::common::http().build().unwrap().get(format!("{}/v2/", s.url)).send().await.is_err());
    assert!(reqwest::get(format!("http://{}/v2/", s.addr)).await.is_err());

    // A whole image pushed and read back over HTTP/2 + TLS.
    let img = multi_arch(81, &PLATFORMS[..2], false, 300_000);
    img.push(&c, "team/app", "v1").await;
    let r = c.get(&format!("/v2/team/app/blobs/{}", img.blobs[0].digest)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, img.blobs[0].bytes);
    assert!(s.log().contains("TLS enabled"), "{}", s.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_and_crane_push_and_pull_over_tls() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x2001");
    let s = TlsServer::start(&tls_keys(&cert, &key));
    let img = multi_arch(82, &PLATFORMS[..2], false, 50_000);
    let layout = pki.path("layout");
    img.write_oci_layout(&layout, "v1");

    let certs = pki.cert_dir();
    let skopeo = |args: &[&str]| {
        let out = require_tool("skopeo", "skopeo").args(args).output().unwrap();
        assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let dest = format!("docker://{}/skopeo/app:v1", s.addr);
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        &format!("oci:{}:v1", layout.display()),
        &dest,
    ]);
    let raw = skopeo(&["inspect", "--raw", "--cert-dir", certs.to_str().unwrap(), &dest]);
    assert_eq!(raw, img.index.bytes, "the index arrives byte-identical over TLS");
    // Verification is on: without the CA skopeo refuses the certificate.
    let out = require_tool("skopeo", "skopeo").args(["inspect", "--raw", &dest]).output().unwrap();
    assert!(!out.status.success());

    // crane (Go) trusts the CA through SSL_CERT_FILE.
    let Some(clients) = crate::common::shared_path("clients") else {
        println!("skipped crane: ../shared/clients not found");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let go_tool = |tool: &str, args: &[&str], ca_env: bool| {
        let mut cmd = Command::new(clients.join(tool));
        cmd.args(args).env_clear().env("HOME", home.path()).env("PATH", "/usr/bin:/bin").stdin(Stdio::null());
        if ca_env {
            cmd.env("SSL_CERT_FILE", pki.ca());
        }
        die_with_parent(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let crane = |args: &[&str]| go_tool("crane", args, true);
    let digest = crane(&["digest", &format!("{}/skopeo/app:v1", s.addr)]);
    assert_eq!(digest.trim(), img.index.digest.to_string());
    crane(&["copy", &format!("{}/skopeo/app:v1", s.addr), &format!("{}/crane/app:v2", s.addr)]);
    assert_eq!(crane(&["ls", &format!("{}/crane/app", s.addr)]).trim(), "v2");
    // oras and regctl with the CA given on their own command lines (no SSL_CERT_FILE).
    let ca = pki.ca();
    let tags =
        go_tool("oras", &["repo", "tags", "--ca-file", ca.to_str().unwrap(), &format!("{}/crane/app", s.addr)], false);
    assert_eq!(tags.trim(), "v2");
    let pem = std::fs::read_to_string(&ca).unwrap();
    go_tool("regctl", &["registry", "set", &s.addr, "--tls", "enabled", "--cacert", &pem], false);
    let digest = go_tool("regctl", &["image", "digest", &format!("{}/crane/app:v2", s.addr)], false);
    assert_eq!(digest.trim(), img.index.digest.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificate_is_used_for_new_connections_and_old_ones_keep_working() {
    let pki = Pki::new();
    let (cert1, key1) = pki.server("one", "0x0A01");
    let (cert2, key2) = pki.server("two", "0x0B02");
    let (cert3, key3) = pki.server("three", "0x0C03");
    // The layout of a Kubernetes secret volume (what cert-manager's certificates arrive in): `tls.crt` and
    // `tls.key` are symlinks into `..data`, itself a symlink to a versioned directory swapped atomically.
    let vol = pki.path("secret");
    std::fs::create_dir_all(&vol).unwrap();
    let publish = |version: &str, cert: &Path, key: &Path| {
        let dir = vol.join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(cert, dir.join("tls.crt")).unwrap();
        std::fs::copy(key, dir.join("tls.key")).unwrap();
        std::os::unix::fs::symlink(version, vol.join("..data_tmp")).unwrap();
        std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
    };
    publish("..v1", &cert1, &key1);
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), vol.join(f)).unwrap();
    }
    let (live_cert, live_key) = (vol.join("tls.crt"), vol.join("tls.key"));
    let s = TlsServer::start(&format!("{}reload_interval_secs = 1\n", tls_keys(&live_cert, &live_key)));
    assert_eq!(presented_serial(&pki, s.port()), "0A01");

    // A keep-alive connection (HTTP/2, one connection per client) opened on the first certificate.
    let old = s.client(&pki.ca());
    let r = old.http.get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let first = response_serial(&r);

    // A broken pair (the key of another certificate) is refused and the old certificate stays.
    publish("..v2", &cert2, &key1);
    wait_for("the mismatched pair to be rejected", || s.log().contains("does not match"));
    assert_eq!(presented_serial(&pki, s.port()), "0A01", "a bad pair never replaces a good one");

    publish("..v3", &cert2, &key2);
    wait_for("the new certificate on new connections", || presented_serial(&pki, s.port()) == "0B02");
    assert!(s.log().contains("TLS certificate reloaded"), "{}", s.log());
    let fresh = s.client(&pki.ca());
    let r = fresh.http.get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(response_serial(&r), first, "a new connection gets the new certificate");

    // The connection opened before the rotation still serves requests (same session: the old certificate).
    for _ in 0..3 {
        let r = old.http.get(format!("{}/v2/", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(response_serial(&r), first, "the pre-rotation connection was reused, not replaced");
    }

    // Plain files replaced by rename (certbot, a config-management tool) are picked up as well.
    for (src, dst) in [(&key3, &live_key), (&cert3, &live_cert)] {
        std::fs::copy(src, pki.path("staged")).unwrap();
        std::fs::rename(pki.path("staged"), dst).unwrap();
    }
    wait_for("the third certificate", || presented_serial(&pki, s.port()) == "0C03");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_requires_a_client_certificate_and_logs_its_identity() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x3001");
    let (ccert, ckey) =
        pki.issue("ci", "ci-bot", "0x3002", "DNS:ci-bot.wharf.test,URI:spiffe://wharf/ci", "clientAuth");
    let other = Pki::new();
    let (rogue_cert, rogue_key) = other.issue("rogue", "rogue", "0x3003", "DNS:rogue.test", "clientAuth");
    let identity = |cert: &Path, key: &Path| {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    };
    let tls = format!("{}client_ca_file = {:?}\n", tls_keys(&cert, &key), pki.ca().to_str().unwrap());
    let s = TlsServer::start(&tls);
    let url = format!("{}/v2/", s.url);

    // No client certificate, or one from another CA: the handshake is refused, no HTTP request gets through.
    // Refused means an answer (an alert or a closed connection), not silence until the client gives up.
    let refused = |r: reqwest::Result<reqwest::Response>, what: &str| match r {
        Ok(r) => panic!("{what} must fail, got {}", r.status()),
        Err(e) => assert!(!e.is_timeout(), "{what}: no answer, the client timed out: {e:?}"),
    };
    let anon = https_client(&pki.ca()).build().unwrap();
    refused(anon.get(&url).send().await, "a request without a client certificate");
    let rogue = https_client(&pki.ca()).identity(identity(&rogue_cert, &rogue_key)).build().unwrap();
    refused(rogue.get(&url).send().await, "a client certificate from another CA");
    let out = output_within(
        require_tool("curl", "curl").args(["-sS", "--max-time", "60", "--cacert"]).arg(pki.ca()).arg(&url),
        Duration::from_secs(90),
    );
    assert!(!out.status.success(), "curl without a client certificate must fail");
    eprintln!("refusals checked");

    // Signed by the configured CA: served, and the identity (CN and SANs) is in the access log line.
    let ok = https_client(&pki.ca()).identity(identity(&ccert, &ckey)).build().unwrap();
    let r = ok.get(format!("{}/v2/_catalog", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_for("the access log line", || s.log().contains("/v2/_catalog"));
    let log = s.log();
    let line = log.lines().find(|l| l.contains("wharf::access") && l.contains("/v2/_catalog")).unwrap();
    assert!(line.contains(r#"client="CN=ci-bot,DNS:ci-bot.wharf.test,URI:spiffe://wharf/ci""#), "{line}");
    assert!(!log.lines().any(|l| l.contains("wharf::access") && l.contains("rogue")), "{log}");
    assert!(log.contains("TLS handshake refused"), "refusals are logged: {log}");
    // A Go client (oras) with its client certificate.
    if let Some(clients) = crate::common::shared_path("clients") {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(clients.join("oras"));
        cmd.args(["repo", "ls", "--ca-file"])
            .arg(pki.ca())
            .arg("--cert-file")
            .arg(&ccert)
            .arg("--key-file")
            .arg(&ckey)
            .arg(&s.addr)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin");
        die_with_parent(&mut cmd);
        let out = output_within(&mut cmd, Duration::from_secs(120));
        assert!(out.status.success(), "oras with a client certificate: {}", String::from_utf8_lossy(&out.stderr));
        eprintln!("oras checked");
    }

    // `client_auth = "optional"`: anonymous clients are served (no identity), certificates still verified.
    let s = TlsServer::start(&format!("{tls}client_auth = \"optional\"\n"));
    let url = format!("{}/v2/", s.url);
    assert_eq!(anon.get(&url).send().await.unwrap().status(), 200);
    let rogue = https_client(&pki.ca()).identity(identity(&rogue_cert, &rogue_key)).build().unwrap();
    refused(rogue.get(&url).send().await, "a presented certificate that does not verify");
    let ok = https_client(&pki.ca()).identity(identity(&ccert, &ckey)).build().unwrap();
    assert_eq!(ok.get(format!("{}/v2/_catalog", s.url)).send().await.unwrap().status(), 200);
    wait_for("the access log line", || s.log().contains("/v2/_catalog"));
    let log = s.log();
    let access: Vec<&str> = log.lines().filter(|l| l.contains("wharf::access")).collect();
    assert!(access.iter().any(|l| l.contains("/v2/_catalog") && l.contains(r#"client="CN=ci-bot"#)), "{log}");
    assert!(access.iter().any(|l| l.contains("path=\"/v2/\"") && !l.contains("client=")), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_is_a_user_for_the_access_rules() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x4001");
    let (ci_cert, ci_key) = pki.issue("ci", "ci-bot", "0x4002", "DNS:ci-bot.wharf.test", "clientAuth");
    let (rd_cert, rd_key) = pki.issue("reader", "reader-bot", "0x4003", "DNS:reader.wharf.test", "clientAuth");
    let (nocn_cert, nocn_key) =
        pki.issue_subject("nocn", "/O=wharf-test", "0x4004", "DNS:nocn.wharf.test,URI:spiffe://w/x", "clientAuth");
    let access = "[auth.groups]\nreaders = [\"reader-bot\"]\n\n\
                  [[access]]\nrepositories = [\"team/*\"]\nusers = [\"ci-bot\", \"DNS:nocn.wharf.test\"]\n\
                  actions = [\"pull\", \"push\"]\n\n\
                  [[access]]\nrepositories = [\"team/*\"]\nusers = [\"group:readers\"]\nactions = [\"pull\"]\n";
    let tls = format!(
        "{}client_ca_file = {:?}\nclient_auth = \"optional\"\n",
        tls_keys(&cert, &key),
        pki.ca().to_str().unwrap()
    );
    let s = TlsServer::start_with(&tls, access);
    let with_cert = |cert: &Path, key: &Path, headers: reqwest::header::HeaderMap| {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        let http = https_client(&pki.ca())
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .default_headers(headers)
            .build()
            .unwrap();
        Client { base: s.url.clone(), http }
    };
    let none = reqwest::header::HeaderMap::new;

    // CN=ci-bot is the user ci-bot: the rule lets it push, with no credentials sent.
    let ci = with_cert(&ci_cert, &ci_key, none());
    assert_eq!(ci.get("/v2/").await.status, 200);
    let img = multi_arch(401, &PLATFORMS[..1], false, 2_000);
    img.push(&ci, "team/app", "v1").await;
    // Without a certificate (client_auth = "optional"): anonymous, and no rule names anonymous.
    let anon = s.client(&pki.ca());
    let r = anon.get("/v2/").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "UNAUTHORIZED");
    assert_eq!(anon.req(reqwest::Method::POST, "/v2/team/app/blobs/uploads/", &[], None).await.status, 401);
    assert_eq!(anon.get("/v2/team/app/manifests/v1").await.status, 401);
    // Groups apply to certificate users: reader-bot may pull, not push (403: known but not allowed).
    let reader = with_cert(&rd_cert, &rd_key, none());
    let r = reader.get("/v2/team/app/manifests/v1").await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &img.index.bytes[..]));
    let r = reader.req(reqwest::Method::POST, "/v2/team/app/blobs/uploads/", &[], None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "DENIED"));
    // No CN: the first SAN is the user name.
    let nocn = with_cert(&nocn_cert, &nocn_key, none());
    img.push(&nocn, "team/other", "v1").await;
    // Explicit credentials win over the certificate, even wrong ones.
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, crate::external::basic_auth_value("ci-bot", "wrong"));
    let r = with_cert(&ci_cert, &ci_key, h).get("/v2/team/app/tags/list").await;
    assert_eq!(r.status, 401, "a wrong password is not rescued by the certificate");
}

#[test]
fn bad_tls_files_stop_start_up_with_exit_code_2_naming_the_key() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x4001");
    let (_, other_key) = pki.server("other", "0x4002");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |tls: &str, args: &[&str]| {
        let cfg = dir.path().join("wharf.toml");
        std::fs::write(&cfg, format!("[server.tls]\n{tls}")).unwrap();
        let mut cmd = Command::new(wharf_bin());
        cmd.arg("--config").arg(&cfg).args(args).arg("--data-dir").arg(dir.path().join("data"));
        cmd.env_remove("WHARF_CONFIG").env_remove("WHARF_LISTEN").env("RUST_LOG", "warn");
        die_with_parent(&mut cmd);
        cmd.output().unwrap()
    };
    let serve = ["serve", "--listen", "127.0.0.1:0"];
    let check = ["config", "check"];
    let cases = [
        (tls_keys(&pki.path("missing.pem"), &key), "server.tls.cert_file", "missing.pem"),
        (tls_keys(&garbage, &key), "server.tls.cert_file", "no CERTIFICATE"),
        (tls_keys(&cert, &garbage), "server.tls.key_file", "no private key"),
        (tls_keys(&cert, &other_key), "server.tls.key_file", "does not match"),
        (
            format!("{}client_ca_file = {:?}\n", tls_keys(&cert, &key), garbage.to_str().unwrap()),
            "server.tls.client_ca_file",
            "garbage.pem",
        ),
    ];
    for (tls, key_name, reason) in &cases {
        for args in [&serve[..], &check[..]] {
            let out = run(tls, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} with {tls}: {stderr}");
            assert!(stderr.contains(key_name) && stderr.contains(reason), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("listening"));
        }
    }
    // A good section passes `config check`.
    let out = run(&tls_keys(&cert, &key), &check);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `client_auth` without a CA is a configuration error.
    let out = run(&format!("{}client_auth = \"optional\"\n", tls_keys(&cert, &key)), &check);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls.client_auth"));
}

#[test]
fn expired_certificate_is_a_warning_not_an_error() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x5001");
    // `openssl ca` can set explicit dates (openssl 3.0's x509 cannot): the same key, a validity in 2020.
    for (f, text) in [
        (
            "ca.cnf",
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
                    default_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n",
        ),
        ("index.txt", ""),
        ("serial", "5002\n"),
    ] {
        std::fs::write(pki.path(f), text).unwrap();
    }
    pki.openssl(&["req", "-new", "-key", key.to_str().unwrap(), "-out", "old.csr", "-subj", "/CN=wharf-old"]);
    pki.openssl(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        "ca.pem",
        "-keyfile",
        "ca.key",
        "-in",
        "old.csr",
        "-out",
        "expired.pem",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-extfile",
        "srv.cnf",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let check = |cert: &Path| {
        let cfg = dir.path().join("wharf.toml");
        std::fs::write(&cfg, format!("[server.tls]\n{}", tls_keys(cert, &key))).unwrap();
        let out = Command::new(wharf_bin()).args(["config", "check"]).arg(&cfg).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, stderr) = check(&pki.path("expired.pem"));
    assert!(ok, "an expired certificate is not a configuration error: {stderr}");
    assert!(
        stderr.contains("warning")
            && stderr.contains("server.tls.cert_file")
            && stderr.contains("expired on 2020-01-02"),
        "{stderr}"
    );
    let (ok, stderr) = check(&cert);
    assert!(ok && !stderr.contains("warning"), "a current certificate has no warning: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_over_tls_finishes_the_request_in_flight() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x6001");
    let mut s = TlsServer::start(&tls_keys(&cert, &key));
    let c = s.client(&pki.ca());
    // Far more than HTTP/2 flow-control windows and socket buffers hold: the server is still sending it.
    let blob: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let digest = c.push_blob("graceful/app", &blob).await;
    let mut resp = c.http.get(format!("{}/v2/graceful/app/blobs/{digest}", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = resp.chunk().await.unwrap().unwrap().to_vec();
    #[allow(unsafe_code)]
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(s.child.id() as i32, libc::SIGTERM);
    }
    // Shutdown has begun once the port no longer accepts connections.
    wait_for("the listener to close", || std::net::TcpStream::connect(&s.addr).is_err());
    while let Some(chunk) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(got == blob, "the download in flight at SIGTERM completes intact ({} of {} bytes)", got.len(), blob.len());
    let status = s.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status}");
}

#[test]
fn conformance_suites_pass_over_tls() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x7001");
    let s = TlsServer::start(&tls_keys(&cert, &key));
    for suite in [crate::conformance::Suite::V111, crate::conformance::Suite::Main] {
        crate::conformance::assert_conforms_at(suite, &s.addr, Some(&pki.ca()), "TLS");
    }
}
