//! Robot tokens against the real binary: `wharf token create | list | revoke` on the data directory of a
//! running `wharf serve`, pushes and pulls with the secret (Basic password, Bearer, skopeo `--creds`), grants
//! that decide alone (403 outside them), expiry and revoke (401; a revoke by the CLI takes effect within the
//! server's 5 s cache), and the secret kept out of the logs, the store's files and `wharf token list`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::common::{die_with_parent, wharf_bin, Client, Resp};
use crate::images::{multi_arch, PLATFORMS};

/// Access control on, with one anonymous rule only: robots get everything they may do from their grants.
const CONFIG: &str = "[[access]]\nrepositories = [\"public/*\"]\nusers = [\"anonymous\"]\nactions = [\"pull\"]\n";

/// A `wharf serve` (trace-level log in a file) on a temp data dir and config.
struct Robo {
    _server: crate::auth::Logged,
    url: String,
    addr: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Robo {
    fn start() -> Robo {
        let dir = tempfile::tempdir().unwrap();
        let server = crate::auth::start_logged(dir.path(), CONFIG, "127.0.0.1:0");
        let (addr, log) = (server.addr.clone(), server.log.clone());
        Robo { _server: server, url: format!("http://{addr}"), addr, dir, log }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `wharf token ARGS` on the server's data directory (and config), as an operator would run it.
    fn token(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(wharf_bin());
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(self.dir.path().join("wharf.toml"))
            .arg("token")
            .args(args)
            .env_remove("WHARF_CONFIG")
            .env_remove("WHARF_DATA_DIR")
            .stdin(Stdio::null());
        die_with_parent(&mut cmd);
        let out = cmd.output().unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Create a token and return its secret (the one line on stdout).
    fn create(&self, name: &str, allow: &[&str], expires: &str) -> String {
        let mut args = vec!["create", "--name", name, "--expires", expires];
        for a in allow {
            args.extend(["--allow", a]);
        }
        let out = self.token(&args);
        assert!(out.ok, "token create: {}", out.stderr);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "the secret alone on stdout: {:?}", out.stdout);
        assert!(lines[0].starts_with("wharf_rt_"), "{:?}", lines[0]);
        assert!(!out.stderr.contains(lines[0]), "the secret is printed once");
        lines[0].to_owned()
    }

    /// A registry client sending the secret as a Basic password with an arbitrary user name.
    fn basic(&self, secret: &str) -> Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::AUTHORIZATION, crate::external::basic_auth_value("whatever", secret));
        Client { base: self.url.clone(), http: crate::common::http().default_headers(h).build().unwrap() }
    }

    /// A registry client sending `Authorization: Bearer <secret>`.
    fn bearer(&self, secret: &str) -> Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::AUTHORIZATION, format!("Bearer {secret}").parse().unwrap());
        Client { base: self.url.clone(), http: crate::common::http().default_headers(h).build().unwrap() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn assert_status(r: &Resp, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), code, "{what}");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn token_created_beside_a_running_server_pushes_and_pulls() {
    let s = Robo::start();
    let secret = s.create("ci", &["team/*:pull,push"], "30d");
    let img = multi_arch(301, &PLATFORMS[..2], false, 5_000);
    // Basic with any user name: the password is the secret.
    let ci = s.basic(&secret);
    assert_eq!(ci.get("/v2/").await.status, 200, "the ping accepts the robot");
    img.push(&ci, "team/app", "v1").await;
    // Bearer with the secret itself pulls it back.
    let bearer = s.bearer(&secret);
    let r = bearer.get("/v2/team/app/manifests/v1").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    let r = bearer.get(&format!("/v2/team/app/blobs/{}", img.blobs[0].digest)).await;
    assert_eq!(&r.body[..], &img.blobs[0].bytes[..]);
    assert_eq!(bearer.get("/v2/team/app/tags/list").await.json()["tags"], serde_json::json!(["v1"]));
    // The grants decide alone: no delete, nothing outside team/*, no status pages.
    let r = ci.req(Method::DELETE, &format!("/v2/team/app/manifests/{}", img.index.digest), &[], None).await;
    assert_status(&r, StatusCode::FORBIDDEN, "DENIED", "delete without the delete action");
    assert_status(&ci.get("/v2/public/x/tags/list").await, StatusCode::FORBIDDEN, "DENIED", "outside the grant");
    assert_eq!(ci.get("/metrics").await.status, StatusCode::FORBIDDEN);
    // The catalog lists what the robot may pull.
    assert_eq!(ci.get("/v2/_catalog").await.json()["repositories"], serde_json::json!(["team/app"]));

    // The secret appears nowhere: not in the log (at trace level), not in any file of the data directory, not
    // in `wharf token list`.
    let random = secret.rsplit_once('_').unwrap().1.to_owned();
    let list = s.token(&["list"]);
    let list_json = s.token(&["list", "--json"]);
    let log = s.log();
    assert!(log.contains("wharf::access"), "the access log was written (so the checks below can fail)");
    for needle in [secret.as_str(), random.as_str()] {
        assert!(!log.contains(needle), "the log contains the secret");
        assert!(files_containing(&s.data_dir(), needle).is_empty(), "a store file contains the secret");
        for out in [&list, &list_json] {
            assert!(!out.stdout.contains(needle) && !out.stderr.contains(needle), "token list shows the secret");
        }
    }
    let encoded = crate::external::basic_auth_value("whatever", &secret);
    let encoded = encoded.to_str().unwrap().trim_start_matches("Basic ");
    assert!(!log.contains(encoded), "the log contains the Authorization value");
    // The record is in the store's meta documents, holding a hash.
    let records = files_containing(&s.data_dir().join("meta/auth/robots"), "sha256");
    assert_eq!(records.len(), 1, "one record with its hash");
}

#[tokio::test]
async fn a_token_for_a_is_denied_on_b() {
    let s = Robo::start();
    let secret = s.create("a-only", &["a/*:pull,push"], "1h");
    let c = s.basic(&secret);
    let img = multi_arch(302, &PLATFORMS[..1], false, 1_000);
    img.push(&c, "a/x", "v1").await;
    let r = c.req(Method::POST, "/v2/b/x/blobs/uploads/", &[], None).await;
    assert_status(&r, StatusCode::FORBIDDEN, "DENIED", "push outside the grant (logged in, not allowed)");
    let r = c.push_manifest("b/x", "v1", &img.index.media_type, &img.index.bytes).await;
    assert_status(&r, StatusCode::FORBIDDEN, "DENIED", "manifest put outside the grant");
    assert_status(&c.get("/v2/b/x/manifests/v1").await, StatusCode::FORBIDDEN, "DENIED", "pull outside the grant");
    // A mount from a/x into b/y is refused too (push on b/y is what is missing).
    let r =
        c.req(Method::POST, &format!("/v2/b/y/blobs/uploads/?mount={}&from=a/x", img.blobs[0].digest), &[], None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn expired_and_unknown_tokens_are_401() {
    let s = Robo::start();
    let secret = s.create("short", &["team/*:pull"], "1s");
    let c = s.basic(&secret);
    // Past its expiry (one second, counted in whole seconds) the token is refused, cache or not.
    std::thread::sleep(Duration::from_millis(2_100));
    let r = c.get("/v2/team/app/tags/list").await;
    assert_status(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "expired token");
    assert!(r.header("www-authenticate").is_some(), "a 401 carries a challenge");
    assert_status(&s.bearer(&secret).get("/v2/").await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "expired, Bearer");
    let forged = format!("{}AAAA", &secret[..secret.len() - 4]);
    assert_status(&s.basic(&forged).get("/v2/").await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "wrong secret");
    let unknown = "wharf_rt_0123456789abcdef_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg";
    assert_status(&s.bearer(unknown).get("/v2/").await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "unknown id");
    let list = s.token(&["list"]);
    assert!(list.stdout.lines().any(|l| l.starts_with("short ") && l.contains(" expired ")), "{}", list.stdout);
}

#[tokio::test]
async fn failed_robot_logins_count_against_the_address() {
    let s = Robo::start();
    let secret = s.create("ci", &["team/*:pull"], "1h");
    let forged = format!("{}AAAA", &secret[..secret.len() - 4]);
    for _ in 0..10 {
        assert_eq!(s.basic(&forged).get("/v2/").await.status, StatusCode::UNAUTHORIZED);
    }
    let r = s.basic(&secret).get("/v2/").await;
    assert_status(&r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "past the failure limit, right secret");
}

#[tokio::test]
async fn revoked_token_is_refused_within_five_seconds() {
    let s = Robo::start();
    let secret = s.create("deploy", &["team/*:pull"], "never");
    let c = s.bearer(&secret);
    assert_eq!(c.get("/v2/").await.status, 200, "verified (and now cached by the server)");
    let out = s.token(&["revoke", "deploy"]);
    assert!(out.ok && out.stdout.contains("revoked"), "{}{}", out.stdout, out.stderr);
    let revoked_at = Instant::now();
    loop {
        let r = c.get("/v2/").await;
        if r.status == StatusCode::UNAUTHORIZED {
            assert_eq!(r.error_code(), "UNAUTHORIZED");
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(6),
            "still accepted {:?} after the revoke",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(revoked_at.elapsed() <= Duration::from_secs(6));
    // Revoking again fails and says why; the name is free for a new token.
    let again = s.token(&["revoke", "deploy"]);
    assert!(!again.ok && again.stderr.contains("already revoked"), "{}", again.stderr);
    let fresh = s.create("deploy", &["team/*:pull"], "1h");
    assert_eq!(s.bearer(&fresh).get("/v2/").await.status, 200);
    assert_eq!(c.get("/v2/").await.status, StatusCode::UNAUTHORIZED, "the old secret stays revoked");
}

#[tokio::test]
async fn token_list_shows_states_and_never_the_secret() {
    let s = Robo::start();
    let active = s.create("active-one", &["team/*:pull,push", "re:^ci/.+$:pull"], "30d");
    let expired = s.create("expired-one", &["x/*:pull"], "1s");
    let revoked = s.create("revoked-one", &["y/*:delete"], "never");
    let out = s.token(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let id_of = |name: &str| rows.as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()["id"].clone();
    // Revoke by id this time.
    let out = s.token(&["revoke", id_of("revoked-one").as_str().unwrap()]);
    assert!(out.ok, "{}", out.stderr);
    std::thread::sleep(Duration::from_millis(2_100));

    let text = s.token(&["list"]);
    assert!(text.ok, "{}", text.stderr);
    let line = |name: &str| text.stdout.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap().to_owned();
    assert!(line("active-one").contains(" active ") && line("active-one").contains("team/*:pull,push re:^ci/.+$:pull"));
    assert!(line("expired-one").contains(" expired "), "{}", text.stdout);
    assert!(line("revoked-one").contains(" revoked ") && line("revoked-one").contains("never"), "{}", text.stdout);
    assert!(text.stdout.starts_with("NAME"), "{}", text.stdout);

    let json = s.token(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let state = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap()["state"].as_str().unwrap().to_owned();
    assert_eq!(
        (state("active-one"), state("expired-one"), state("revoked-one")),
        ("active".into(), "expired".into(), "revoked".into())
    );
    let a = rows.iter().find(|r| r["name"] == "active-one").unwrap();
    assert_eq!(a["allow"], serde_json::json!(["team/*:pull,push", "re:^ci/.+$:pull"]));
    assert!(a["created"].as_u64().is_some() && a["expires"].as_u64().unwrap() > a["created"].as_u64().unwrap());
    for out in [&text, &json] {
        assert!(!out.stdout.contains("sha256"), "no hash in the listing");
        for secret in [&active, &expired, &revoked] {
            assert!(!out.stdout.contains(secret.as_str()) && !out.stderr.contains(secret.as_str()));
            assert!(!out.stdout.contains(secret.rsplit_once('_').unwrap().1));
        }
    }
}

#[test]
fn create_refuses_duplicates_and_bad_arguments() {
    let s = Robo::start();
    s.create("ci", &["team/*:pull"], "1d");
    let dup = s.token(&["create", "--name", "ci", "--allow", "team/*:pull", "--expires", "1d"]);
    assert!(!dup.ok && dup.stderr.contains("already named"), "{}", dup.stderr);
    assert!(dup.stdout.is_empty(), "no secret for a refused create");
    for (args, expect) in [
        (&["--name", "x", "--allow", "team/*:write", "--expires", "1d"][..], "write"),
        (&["--name", "x", "--allow", "team/*", "--expires", "1d"][..], "REPOSITORIES:ACTIONS"),
        (&["--name", "x", "--allow", "team/*:pull", "--expires", "2y"][..], "--expires"),
        (&["--name", "x", "--allow", "team/*:pull", "--expires", "400d"][..], "longer than a year"),
        (&["--name", "a b", "--allow", "team/*:pull", "--expires", "1d"][..], "invalid token name"),
        (&["--name", "x", "--expires", "1d"][..], "--allow"),
        (&["--name", "x", "--allow", "team/*:pull"][..], "--expires"),
    ] {
        let out = s.token(&[&["create"], args].concat());
        assert!(!out.ok && out.stderr.contains(expect), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    let none = s.token(&["revoke", "nope"]);
    assert!(!none.ok && none.stderr.contains("no token"), "{}", none.stderr);
}

/// Run skopeo with a private HOME; (success, combined output).
fn skopeo(home: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = crate::external::require_tool("skopeo", "skopeo");
    cmd.args(args).env_clear().env("HOME", home).env("PATH", "/usr/bin:/bin").env("TMPDIR", home).stdin(Stdio::null());
    die_with_parent(&mut cmd);
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn skopeo_pushes_and_pulls_with_a_robot_token() {
    let s = Robo::start();
    let secret = s.create("skopeo", &["team/*:pull,push"], "1h");
    let narrow = s.create("narrow", &["other/*:pull,push"], "1h");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let img = multi_arch(303, PLATFORMS, false, 20_000);
    img.write_oci_layout(&src, "v1");
    let (addr, out_dir) = (s.addr.clone(), tmp.path().join("out"));
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let creds = format!("x:{secret}");
        let src_ref = format!("oci:{}:v1", src.display());
        let dest = format!("docker://{addr}/team/skopeo:v1");
        let (ok, out) = skopeo(
            h,
            &[
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
                &src_ref,
                &dest,
            ],
        );
        assert!(ok, "skopeo copy with --dest-creds x:<secret>: {out}");
        let out_ref = format!("oci:{}:v1", out_dir.display());
        let (ok, out) = skopeo(h, &["copy", "--all", "--src-tls-verify=false", "--src-creds", &creds, &dest, &out_ref]);
        assert!(ok, "skopeo copy back: {out}");
        let (ok, out) =
            skopeo(h, &["inspect", "--raw", "--tls-verify=false", "--creds", &format!("x:{narrow}"), &dest]);
        assert!(!ok && (out.contains("403") || out.to_lowercase().contains("denied")), "outside the grant: {out}");
        assert!(!out.contains(&narrow), "skopeo's error shows no secret from the server");
    })
    .await
    .unwrap();
    let r = s.client_for_check().get("/v2/team/skopeo/manifests/v1").await;
    assert_eq!(&r.body[..], &img.index.bytes[..]);
}

impl Robo {
    /// A fresh token allowed to pull everything, for checks after a client ran.
    fn client_for_check(&self) -> Client {
        let secret = self.create(&format!("check-{}", std::process::id()), &["*:pull"], "1h");
        self.basic(&secret)
    }
}
