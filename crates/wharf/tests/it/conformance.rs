//! The official OCI distribution-spec conformance suites (`../shared/conformance/`: the released v1.1.1
//! Ginkgo suite and the redesigned main-branch suite) run against the real binary, as a plain registry and as
//! a registry with a default upstream (a second Wharf on loopback) and a second, non-default upstream name.
//!
//! A test fails on any failed check and prints the failing checks with the suite's message, so a CI log says
//! what broke. Skipped (with a message) when `../shared/conformance` is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{die_with_parent, shared_path, Server};
use crate::images::{multi_arch, PLATFORMS};

/// Checks Wharf is allowed to fail, each with the reason. Empty: every check must pass.
const ALLOWED: &[(&str, &str)] = &[];

/// No suite run takes this long unless something hangs; the run is then killed and reported.
const HANG_GUARD: Duration = Duration::from_secs(900);

#[derive(Clone, Copy, Debug)]
pub(crate) enum Suite {
    /// `conformance-v1.1.1.test` (Ginkgo); report dir from `OCI_REPORT_DIR`.
    V111,
    /// `conformance-main`; report dir from `OCI_RESULTS_DIR`.
    Main,
}

impl Suite {
    fn file(self) -> &'static str {
        match self {
            Suite::V111 => "conformance-v1.1.1.test",
            Suite::Main => "conformance-main",
        }
    }
}

/// One check from a junit report.
#[derive(Debug)]
struct Check {
    name: String,
    status: Status,
    message: String,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Status {
    Passed,
    Skipped,
    Failed,
}

fn suite_binary(suite: Suite) -> Option<PathBuf> {
    let p = shared_path("conformance")?.join(suite.file());
    p.is_file().then_some(p)
}

/// Run `suite` against the registry at `addr` with its reports under `out`; returns every check it reported,
/// the exit status and the combined output. With `ca` the registry is reached over HTTPS, trusting that CA
/// bundle (Go reads `SSL_CERT_FILE`).
fn run_suite(
    bin: &Path,
    suite: Suite,
    addr: &str,
    ca: Option<&Path>,
    creds: Option<(&str, &str)>,
    out: &Path,
) -> (Vec<Check>, std::process::ExitStatus, String) {
    let home = out.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let reports = out.join("report");
    let log_path = out.join("output.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(bin);
    // A clean environment: no OCI_* setting (or yaml file in the working directory) of the caller leaks in.
    cmd.env_clear()
        .current_dir(out)
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .env("OCI_ROOT_URL", format!("{}://{addr}", if ca.is_some() { "https" } else { "http" }))
        .env("OCI_REGISTRY", addr)
        .env("OCI_TLS", if ca.is_some() { "enabled" } else { "disabled" })
        .env("OCI_NAMESPACE", "conformance/repo1")
        .env("OCI_REPO1", "conformance/repo1")
        .env("OCI_CROSSMOUNT_NAMESPACE", "conformance/repo2")
        .env("OCI_REPO2", "conformance/repo2")
        .env("OCI_TEST_PULL", "1")
        .env("OCI_TEST_PUSH", "1")
        .env("OCI_TEST_CONTENT_DISCOVERY", "1")
        .env("OCI_TEST_CONTENT_MANAGEMENT", "1")
        .env("OCI_HIDE_SKIPPED_WORKFLOWS", "0")
        // v1.1.1: Wharf never mounts a blob without `from` (that would let anyone who knows a digest read a
        // blob pushed to another repository), so it must answer such a mount with an upload session (202).
        .env("OCI_AUTOMATIC_CROSSMOUNT", "false")
        // main: also check upload cancel and the Docker-Content-Digest headers, optional in the 1.1 defaults.
        .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
        .env("OCI_API_BLOBS_DIGEST_HEADER", "true")
        .env("OCI_API_MANIFESTS_DIGEST_HEADER", "true")
        .env("OCI_REPORT_DIR", &reports)
        .env("OCI_RESULTS_DIR", &reports)
        .stdin(Stdio::null())
        .envs(ca.map(|ca| ("SSL_CERT_FILE", ca)))
        .envs(creds.into_iter().flat_map(|(u, p)| [("OCI_USERNAME", u), ("OCI_PASSWORD", p)]))
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("start the conformance suite");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("{suite:?} still running after {HANG_GUARD:?}: killed. Output so far:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let junit = std::fs::read_to_string(reports.join("junit.xml"))
        .unwrap_or_else(|e| panic!("{suite:?} wrote no junit.xml ({e}), exit {status}. Output:\n{output}"));
    (parse_junit(&junit), status, output)
}

/// The `<testcase>` elements of a junit report: name (with its classname) and outcome.
fn parse_junit(xml: &str) -> Vec<Check> {
    let mut out = Vec::new();
    for chunk in xml.split("<testcase").skip(1) {
        let open_end = chunk.find('>').unwrap_or(chunk.len());
        let open = &chunk[..open_end];
        let self_closing = open.ends_with('/');
        let body = if self_closing { "" } else { &chunk[open_end..chunk.find("</testcase>").unwrap_or(chunk.len())] };
        let classname = attr(open, "classname").unwrap_or_default();
        let name = attr(open, "name").unwrap_or_default();
        let name =
            if classname.is_empty() || name.starts_with(&classname) { name } else { format!("{classname} / {name}") };
        let status_attr = attr(open, "status").unwrap_or_default();
        let (status, tag) = if body.contains("<failure") || status_attr == "failure" {
            (Status::Failed, "<failure")
        } else if body.contains("<error") || status_attr == "error" {
            (Status::Failed, "<error")
        } else if body.contains("<skipped") || status_attr == "skipped" || status_attr == "pending" {
            (Status::Skipped, "<skipped")
        } else {
            (Status::Passed, "")
        };
        let message = match body.find(tag) {
            Some(i) if !tag.is_empty() => {
                let el = &body[i..];
                let open = &el[..el.find('>').unwrap_or(el.len())];
                let mut m = attr(open, "message").unwrap_or_default();
                let text = el[open.len()..].trim_start_matches('>');
                let text = text.split("</").next().unwrap_or("");
                let text = text.trim_start_matches("<![CDATA[").trim_end_matches("]]>");
                let text = unescape(text.trim());
                if !text.is_empty() {
                    m = format!("{m}\n{text}");
                }
                m
            }
            // The main suite marks the outcome in `status` and explains it in <system-out>.
            _ if status == Status::Failed => body
                .split_once("<system-out>")
                .and_then(|(_, rest)| rest.split_once("</system-out>"))
                .map(|(text, _)| unescape(text.trim()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        out.push(Check { name, status, message });
    }
    out
}

fn attr(open: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=\"");
    let start = open.find(&needle)? + needle.len();
    let len = open[start..].find('"')?;
    Some(unescape(&open[start..start + len]))
}

fn unescape(s: &str) -> String {
    s.replace("&#xA;", "\n")
        .replace("&#xa;", "\n")
        .replace("&#x9;", "\t")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Run `suite` against `registry`; panic listing every failed check that is not allow-listed.
pub(crate) fn assert_conforms(suite: Suite, registry: &Server, label: &str) {
    assert_conforms_at(suite, &registry.addr, None, label)
}

/// [`assert_conforms`] for the registry at `addr`, over HTTPS trusting `ca` when given.
pub(crate) fn assert_conforms_at(suite: Suite, addr: &str, ca: Option<&Path>, label: &str) {
    assert_conforms_as(suite, addr, ca, None, label)
}

/// [`assert_conforms_at`] with Basic credentials for the suite (`OCI_USERNAME`/`OCI_PASSWORD`).
fn assert_conforms_as(suite: Suite, addr: &str, ca: Option<&Path>, creds: Option<(&str, &str)>, label: &str) {
    let Some(bin) = suite_binary(suite) else {
        println!("skipped: ../shared/conformance not found ({} for {label})", suite.file());
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (checks, status, output) = run_suite(&bin, suite, addr, ca, creds, dir.path());
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (passed, skipped) = (count(Status::Passed), count(Status::Skipped));
    let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Failed).collect();
    let (allowed, failing): (Vec<&Check>, Vec<&Check>) =
        failed.iter().partition(|c| ALLOWED.iter().any(|(name, _)| c.name == *name));
    println!(
        "{label}: {:?} suite: {passed} passed, {skipped} skipped, {} failed ({} allow-listed), exit {status}, {:.1} s",
        suite,
        failed.len(),
        allowed.len(),
        started.elapsed().as_secs_f64()
    );
    for c in checks.iter().filter(|c| c.status == Status::Skipped) {
        println!("  skipped by the suite: {} ({})", c.name, c.message.lines().next().unwrap_or(""));
    }
    for c in &allowed {
        let why = ALLOWED.iter().find(|(n, _)| c.name == *n).map(|(_, w)| *w).unwrap_or_default();
        println!("  allowed failure: {} ({why})", c.name);
    }
    if !failing.is_empty() {
        let list: Vec<String> =
            failing.iter().map(|c| format!("FAILED: {}\n    {}", c.name, indent(&c.message))).collect();
        let tail: String = {
            let lines: Vec<&str> = output.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        panic!(
            "{label}: {:?} conformance suite: {} check(s) failed:\n{}\n--- last lines of the suite's output ---\n{tail}",
            suite,
            failing.len(),
            list.join("\n")
        );
    }
    assert!(passed > 0, "{label}: {suite:?} reported no passed check; output:\n{output}");
    // Exit status and report agree (a suite that crashed half-way has no failed testcase but exits non-zero).
    assert!(
        status.success() || !allowed.is_empty(),
        "{label}: {suite:?} exited {status} with no failed check in its report; output:\n{output}"
    );
}

fn indent(s: &str) -> String {
    let s: String = s.chars().take(2_000).collect();
    s.replace('\n', "\n    ")
}

/// A Wharf with a default upstream (`docker.io`, another Wharf holding one image) and a second, non-default
/// upstream name (`quay.io`, the same origin). The suites push to `conformance/*`, names the upstream does not
/// hold, so they exercise the hosted-or-default-upstream route; afterwards the mirror must still serve the
/// upstream's image by the default route and by prefix.
struct Mirrored {
    upstream: Server,
    mirror: Server,
    image: crate::images::Image,
}

async fn mirrored() -> Mirrored {
    let upstream = Server::start();
    let image = multi_arch(71, &PLATFORMS[..2], false, 4_000);
    image.push(&upstream.client(), "library/demo", "v1").await;
    let mirror = Server::start_config(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{0}\"\ndefault = true\n\n\
         [[upstream]]\nname = \"quay.io\"\nurl = \"{0}\"\n",
        upstream.url
    ));
    Mirrored { upstream, mirror, image }
}

impl Mirrored {
    async fn assert_mirror_still_works(&self) {
        let c = self.mirror.client();
        let accept = format!("{}, {}", crate::images::OCI_INDEX, crate::images::DOCKER_LIST);
        for path in ["library/demo", "docker.io/library/demo", "quay.io/library/demo"] {
            let r =
                c.req(reqwest::Method::GET, &format!("/v2/{path}/manifests/v1"), &[("accept", &accept)], None).await;
            assert_eq!(r.status, 200, "{path} after the suite: {:?}", r.body);
            assert_eq!(&r.body[..], &self.image.index.bytes[..], "{path}");
        }
        // The suites' pushes stayed on the mirror: the upstream never saw a write.
        let catalog = self.upstream.client().get("/v2/_catalog").await.json();
        assert_eq!(catalog["repositories"], serde_json::json!(["library/demo"]), "upstream catalog");
    }
}

// Each test drives one blocking suite process; the runtime's worker thread just waits for it.

#[test]
fn v1_1_1_suite_passes_plain() {
    let s = Server::start();
    assert_conforms(Suite::V111, &s, "plain");
}

/// A Wharf with `[auth] htpasswd` and one `[[access]]` rule for the suites' user on `conformance/*`; the suites
/// send Basic credentials when challenged. Anonymous requests must be challenged, never served.
fn with_auth() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.htpasswd");
    std::fs::write(&users, format!("conformance:{}\n", bcrypt::hash("conformance-pw", 4).unwrap())).unwrap();
    let s = Server::start_config(&format!(
        "[auth]\nhtpasswd = {:?}\n\n[[access]]\nrepositories = [\"conformance/*\"]\nusers = [\"conformance\"]\n\
         actions = [\"pull\", \"push\", \"delete\"]\n",
        users.to_str().unwrap()
    ));
    (dir, s)
}

#[tokio::test]
async fn suites_pass_with_basic_auth() {
    let (_dir, s) = with_auth();
    let addr = s.addr.clone();
    tokio::task::spawn_blocking(move || {
        let creds = Some(("conformance", "conformance-pw"));
        assert_conforms_as(Suite::V111, &addr, None, creds, "basic auth");
        assert_conforms_as(Suite::Main, &addr, None, creds, "basic auth");
    })
    .await
    .unwrap();
    let r = s.client().get("/v2/conformance/repo1/tags/list").await;
    assert_eq!(r.status, 401, "anonymous reads stay challenged after the suites");
}

#[test]
fn main_suite_passes_plain() {
    let s = Server::start();
    assert_conforms(Suite::Main, &s, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn v1_1_1_suite_passes_with_default_upstream() {
    if suite_binary(Suite::V111).is_none() {
        println!("skipped: ../shared/conformance not found");
        return;
    }
    let m = mirrored().await;
    tokio::task::block_in_place(|| assert_conforms(Suite::V111, &m.mirror, "default upstream"));
    m.assert_mirror_still_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn main_suite_passes_with_default_upstream() {
    if suite_binary(Suite::Main).is_none() {
        println!("skipped: ../shared/conformance not found");
        return;
    }
    let m = mirrored().await;
    tokio::task::block_in_place(|| assert_conforms(Suite::Main, &m.mirror, "default upstream"));
    m.assert_mirror_still_works().await;
}

#[test]
fn junit_parser_finds_failures() {
    let xml = r#"<testsuites><testsuite name="s" tests="3">
<testcase name="Pull / blob get" classname="OCI"><failure message="want 200 &amp; got 404">body &lt;x&gt;</failure></testcase>
<testcase name="ok" classname="OCI" status="passed"></testcase>
<testcase name="skip" classname="OCI"><skipped message="disabled"/></testcase>
<testcase name="broken" classname="OCI" status="error"><error message="boom"></error></testcase>
<testcase name="Suite/push/manifest-by-tag" classname="" status="failure"><system-out>expected &#34;a&#34;&#xA;got b</system-out><system-err>log</system-err></testcase>
</testsuite></testsuites>"#;
    let checks = parse_junit(xml);
    let got: Vec<(&str, Status)> = checks.iter().map(|c| (c.name.as_str(), c.status)).collect();
    assert_eq!(
        got,
        [
            ("OCI / Pull / blob get", Status::Failed),
            ("OCI / ok", Status::Passed),
            ("OCI / skip", Status::Skipped),
            ("OCI / broken", Status::Failed),
            ("Suite/push/manifest-by-tag", Status::Failed)
        ]
    );
    assert_eq!(checks[4].message, "expected \"a\"\ngot b");
    assert_eq!(checks[0].message, "want 200 & got 404\nbody <x>");
}

/// One HTTP/1.1 exchange on a raw connection: status, lower-cased headers, body.
fn exchange(conn: &mut std::net::TcpStream, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::Write;
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    read_response(conn)
}

fn read_response(conn: &mut std::net::TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).unwrap();
        assert_eq!(n, 1, "connection closed before a response; got {:?}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The v1.1.1 suite's "Out-of-order blob upload should return 416" answers before the chunk's body arrives;
/// the server then closes the connection, and before the fix it did so without `Connection: close`, so the
/// suite's next POST on the pooled connection failed with EOF (intermittently, when the body came late).
#[test]
fn a_response_that_leaves_the_body_unread_says_connection_close() {
    use std::io::Write;
    let s = Server::start();
    let mut conn = std::net::TcpStream::connect(&s.addr).unwrap();
    let (status, headers, _) =
        exchange(&mut conn, "POST /v2/ka/repo/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"");
    assert_eq!(status, 202);
    assert_eq!(header(&headers, "connection"), None);
    let location = header(&headers, "location").unwrap().to_owned();
    // Out-of-order chunk; its body is held back until the answer is in.
    conn.write_all(
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: 10\r\nContent-Range: 10-19\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let (status, headers, _) = read_response(&mut conn);
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "connection"), Some("close"), "{headers:?}");

    // Requests whose bodies are read keep the connection open: a monolithic push, a chunked push, a
    // manifest PUT, then a GET, all on one connection.
    let mut conn = std::net::TcpStream::connect(&s.addr).unwrap();
    let blob = b"0123456789";
    let digest = oci::Digest::sha256_of(blob);
    let (status, headers, _) = exchange(
        &mut conn,
        &format!("POST /v2/ka/repo/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"),
        blob,
    );
    assert_eq!((status, header(&headers, "connection")), (201, None));
    let (status, headers, _) =
        exchange(&mut conn, "POST /v2/ka/repo/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"");
    assert_eq!(status, 202);
    let location = header(&headers, "location").unwrap().to_owned();
    let (status, headers, _) = exchange(
        &mut conn,
        &format!("PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Range: 0-4\r\n\r\n"),
        b"01234",
    );
    assert_eq!((status, header(&headers, "connection")), (202, None));
    let (status, headers, _) = exchange(
        &mut conn,
        &format!(
            "PUT {location}?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Range: 5-9\r\n\r\n"
        ),
        b"56789",
    );
    assert_eq!((status, header(&headers, "connection")), (201, None));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": crate::images::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.to_string(), "size": 10},
        "layers": [],
    }))
    .unwrap();
    let (status, headers, body) = exchange(
        &mut conn,
        &format!(
            "PUT /v2/ka/repo/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            crate::images::OCI_MANIFEST,
            manifest.len()
        ),
        &manifest,
    );
    assert_eq!((status, header(&headers, "connection")), (201, None), "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = exchange(&mut conn, "GET /v2/ka/repo/tags/list HTTP/1.1\r\nHost: x\r\n\r\n", b"");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tags"], serde_json::json!(["v1"]));
}
