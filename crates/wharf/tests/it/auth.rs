//! Access control against the real binary: htpasswd users with Basic credentials on `/v2/`, `[[access]]`
//! rules, the filtered catalog, admin-only status pages, the failed-login limit, secrets kept out of the logs,
//! `wharf config check`, the start-up warning, and real clients (skopeo, crane, oras, regctl) with credentials.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, StatusCode};

use crate::common::{die_with_parent, shared_path, wharf_bin, Client, Resp, Server};
use crate::images::{multi_arch, PLATFORMS};

/// Passwords used below; distinctive so a grep of the logs cannot match anything else.
pub(crate) const ALICE_PW: &str = "alice-Pa55-w0rd-7f3a";
pub(crate) const BOB_PW: &str = "bob-Pa55-w0rd-91c2";
pub(crate) const ADMIN_PW: &str = "admin-Pa55-w0rd-c0de";
pub(crate) const WRONG_PW: &str = "wrong-Pa55-w0rd-e77e";

/// A temp folder with `users.htpasswd` (bcrypt, cost 4 to keep tests fast) for alice, bob and admin.
pub(crate) fn users_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path(), &[("alice", ALICE_PW), ("bob", BOB_PW), ("admin", ADMIN_PW)]);
    dir
}

pub(crate) fn write_users(dir: &Path, users: &[(&str, &str)]) {
    let text: String = users.iter().map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap())).collect();
    // `htpasswd -B` writes `$2y$`; the crate writes `$2b$`: accept both by writing one of each.
    let text = text.replacen("$2b$", "$2y$", 1);
    std::fs::write(dir.join("users.htpasswd"), text).unwrap();
}

pub(crate) fn htpasswd(dir: &Path) -> String {
    dir.join("users.htpasswd").to_str().unwrap().to_owned()
}

/// The configuration used by most tests: alice may push `team/*` and only pull `readonly/*`; the `ci` group
/// (bob) may push `team/*`; anyone may pull `public/*`; admin may do everything, including the status pages.
pub(crate) fn config(dir: &Path, extra: &str) -> String {
    format!(
        "[auth]\nhtpasswd = \"{}\"\n{extra}\n[auth.groups]\nci = [\"bob\"]\n\n\
         [[access]]\nrepositories = [\"*\"]\nusers = [\"admin\"]\nactions = [\"pull\", \"push\", \"delete\", \"admin\"]\n\n\
         [[access]]\nrepositories = [\"team/*\"]\nusers = [\"alice\", \"group:ci\"]\nactions = [\"pull\", \"push\", \"delete\"]\n\n\
         [[access]]\nrepositories = [\"readonly/*\"]\nusers = [\"alice\"]\nactions = [\"pull\"]\n\n\
         [[access]]\nrepositories = [\"public/*\"]\nusers = [\"anonymous\", \"alice\"]\nactions = [\"pull\"]\n",
        htpasswd(dir)
    )
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A client that sends Basic credentials with every request.
pub(crate) fn client_as(s: &Server, user: &str, password: &str) -> Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, basic(user, password).parse().unwrap());
    Client { base: s.url.clone(), http: crate::common::http().default_headers(h).build().unwrap() }
}

/// A 401 with the Bearer challenge naming this server's token endpoint (and the scope, when one is needed).
pub(crate) fn assert_challenge(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "UNAUTHORIZED", "{what}");
    let c = r.header("www-authenticate").unwrap_or_default();
    assert!(
        c.starts_with("Bearer realm=\"http://127.0.0.1:") && c.contains("/auth/token\",service=\"wharf\""),
        "{what}: {c}"
    );
}

/// A 401 with the Basic challenge (the status pages, which clients never reach through the token flow).
fn assert_basic_challenge(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "UNAUTHORIZED", "{what}");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Basic realm=\"wharf\""), "{what}");
}

pub(crate) fn assert_denied(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "DENIED", "{what}");
}

#[tokio::test]
async fn wrong_password_is_401_with_the_bearer_challenge() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    assert_challenge(&s.client().get("/v2/").await, "anonymous ping");
    assert_challenge(&client_as(&s, "alice", WRONG_PW).get("/v2/").await, "wrong password");
    assert_challenge(&client_as(&s, "nobody", WRONG_PW).get("/v2/team/app/tags/list").await, "unknown user");
    let r = s.client().req(Method::GET, "/v2/", &[("authorization", "Basic !!!notbase64")], None).await;
    assert_challenge(&r, "malformed header");
    let r = client_as(&s, "alice", ALICE_PW).get("/v2/").await;
    assert_eq!(r.status, 200);
    // Wrong credentials are refused even where anonymous callers may read.
    assert_challenge(&client_as(&s, "alice", WRONG_PW).get("/v2/public/x/tags/list").await, "wrong password, public");
}

#[tokio::test]
async fn pull_only_rule_refuses_push_and_delete_with_403() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let admin = client_as(&s, "admin", ADMIN_PW);
    let img = multi_arch(81, &PLATFORMS[..1], false, 1_000);
    img.push(&admin, "readonly/app", "v1").await;
    let alice = client_as(&s, "alice", ALICE_PW);
    let r = alice.get("/v2/readonly/app/manifests/v1").await;
    assert_eq!(r.status, 200, "alice may pull readonly/*");
    let r = alice.req(Method::POST, "/v2/readonly/app/blobs/uploads/", &[], None).await;
    assert_denied(&r, "push to a pull-only rule");
    let r = alice
        .req(
            Method::PUT,
            "/v2/readonly/app/manifests/v2",
            &[("content-type", &img.index.media_type)],
            Some(img.index.bytes.clone()),
        )
        .await;
    assert_denied(&r, "manifest put to a pull-only rule");
    let r = alice.req(Method::DELETE, &format!("/v2/readonly/app/manifests/{}", img.index.digest), &[], None).await;
    assert_denied(&r, "delete under a pull-only rule");
    // Nothing changed.
    assert_eq!(admin.get("/v2/readonly/app/tags/list").await.json()["tags"], serde_json::json!(["v1"]));
    // A group member pushes where the group may.
    img.push(&client_as(&s, "bob", BOB_PW), "team/app", "v1").await;
}

#[tokio::test]
async fn anonymous_pull_allowed_by_a_rule_and_nothing_else() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let img = multi_arch(82, &PLATFORMS[..1], false, 1_000);
    img.push(&client_as(&s, "admin", ADMIN_PW), "public/app", "v1").await;
    img.push(&client_as(&s, "admin", ADMIN_PW), "team/app", "v1").await;
    let anon = s.client();
    let r = anon.get("/v2/public/app/manifests/v1").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    let r = anon.get(&format!("/v2/public/app/blobs/{}", img.blobs[0].digest)).await;
    assert_eq!(r.status, 200);
    assert_challenge(&anon.get("/v2/team/app/manifests/v1").await, "anonymous pull outside the rule");
    assert_challenge(&anon.req(Method::POST, "/v2/public/app/blobs/uploads/", &[], None).await, "anonymous push");
    // Anonymous callers list only what they may read (a rule names them).
    let r = anon.get("/v2/_catalog").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["public/app"]));
}

#[tokio::test]
async fn a_user_allowed_on_team_is_refused_on_other_repositories() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let img = multi_arch(83, &PLATFORMS[..1], false, 1_000);
    img.push(&client_as(&s, "admin", ADMIN_PW), "other/x", "v1").await;
    let alice = client_as(&s, "alice", ALICE_PW);
    img.push(&alice, "team/x", "v1").await;
    assert_denied(&alice.get("/v2/other/x/manifests/v1").await, "pull other/x");
    assert_denied(&alice.get("/v2/other/x/tags/list").await, "tags of other/x");
    assert_denied(&alice.get(&format!("/v2/other/x/blobs/{}", img.blobs[0].digest)).await, "blob of other/x");
    assert_denied(&alice.req(Method::POST, "/v2/other/x/blobs/uploads/", &[], None).await, "push other/x");
    // `team/*` covers nested names, not look-alikes.
    assert_denied(&alice.get("/v2/teamx/y/tags/list").await, "teamx/y");
}

#[tokio::test]
async fn mount_from_an_unreadable_repository_becomes_a_plain_upload() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let secret = client_as(&s, "admin", ADMIN_PW).push_blob("other/secret", b"secret layer bytes").await;
    let alice = client_as(&s, "alice", ALICE_PW);
    let r = alice
        .req(Method::POST, &format!("/v2/team/app/blobs/uploads/?mount={secret}&from=other/secret"), &[], None)
        .await;
    assert_eq!(r.status, 202, "an upload session, not a mount: {:?}", r.body);
    assert_eq!(alice.req(Method::HEAD, &format!("/v2/team/app/blobs/{secret}"), &[], None).await.status, 404);
    // From a readable repository the mount happens.
    let shared = client_as(&s, "admin", ADMIN_PW).push_blob("public/base", b"public layer bytes").await;
    let r = alice
        .req(Method::POST, &format!("/v2/team/app/blobs/uploads/?mount={shared}&from=public/base"), &[], None)
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

#[tokio::test]
async fn catalog_lists_only_readable_repositories() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let admin = client_as(&s, "admin", ADMIN_PW);
    for repo in ["other/a", "public/b", "readonly/c", "team/d", "team/e", "zzz/f"] {
        admin.push_blob(repo, repo.as_bytes()).await;
        let img = multi_arch(84, &PLATFORMS[..1], false, 100);
        img.push(&admin, repo, "v1").await;
    }
    let alice = client_as(&s, "alice", ALICE_PW);
    let all = alice.get("/v2/_catalog").await.json();
    assert_eq!(all["repositories"], serde_json::json!(["public/b", "readonly/c", "team/d", "team/e"]));
    // Pagination counts readable names only.
    let r = alice.get("/v2/_catalog?n=2").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["public/b", "readonly/c"]));
    let link = r.header("link").expect("a next link");
    assert!(link.contains("last=readonly%2Fc") || link.contains("last=readonly/c"), "{link}");
    let r = alice.get("/v2/_catalog?n=2&last=readonly/c").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["team/d", "team/e"]));
    let bob = client_as(&s, "bob", BOB_PW).get("/v2/_catalog").await.json();
    // bob is not named on public/* (a logged-in user is not `anonymous`).
    assert_eq!(bob["repositories"], serde_json::json!(["team/d", "team/e"]));
    assert_eq!(admin.get("/v2/_catalog").await.json()["repositories"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn status_pages_and_metrics_need_admin_unless_public() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    for path in ["/metrics", "/_wharf/mirror", "/_wharf/sync", "/_wharf/gc"] {
        assert_basic_challenge(&s.client().get(path).await, path);
        assert_denied(&client_as(&s, "alice", ALICE_PW).get(path).await, path);
        assert_basic_challenge(&client_as(&s, "admin", WRONG_PW).get(path).await, path);
        assert_eq!(client_as(&s, "admin", ADMIN_PW).get(path).await.status, 200, "{path}");
    }
    drop(s);
    let s = Server::start_config(&config(dir.path(), "public_status = true"));
    for path in ["/metrics", "/_wharf/mirror", "/_wharf/sync", "/_wharf/gc"] {
        assert_eq!(s.client().get(path).await.status, 200, "{path} with public_status");
    }
    assert_challenge(&s.client().get("/v2/team/a/tags/list").await, "public_status opens only the status pages");
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_address() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let wrong = client_as(&s, "alice", WRONG_PW);
    for i in 0..10 {
        assert_challenge(&wrong.get("/v2/").await, &format!("failure {i}"));
    }
    // Past the limit even the right password waits, with a Retry-After.
    let r = client_as(&s, "alice", ALICE_PW).get("/v2/").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    assert!(r.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s > 0));
    // Anonymous requests are not logins and are not refused.
    assert_eq!(s.client().get("/v2/public/x/tags/list").await.status, 404);
}

#[tokio::test]
async fn htpasswd_changes_are_picked_up() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), "reload_interval_secs = 1"));
    assert_eq!(client_as(&s, "alice", ALICE_PW).get("/v2/").await.status, 200);
    write_users(dir.path(), &[("alice", "alice-new-pw-2"), ("bob", BOB_PW), ("admin", ADMIN_PW)]);
    // Wait (bounded) for the poller to notice; the old password must stop working, the new one start.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client_as(&s, "alice", "alice-new-pw-2").get("/v2/").await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the changed htpasswd file was never loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_challenge(&client_as(&s, "alice", ALICE_PW).get("/v2/").await, "old password after the reload");
}

/// A `wharf serve` whose stderr goes to a file (for log checks), started on `listen`.
pub(crate) struct Logged {
    child: Child,
    pub(crate) addr: String,
    pub(crate) log: PathBuf,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_logged(dir: &Path, toml: &str, listen: &str) -> Logged {
    let cfg = dir.join("wharf.toml");
    std::fs::write(&cfg, toml).unwrap();
    let log = dir.join("stderr.log");
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["serve", "--listen", listen, "--data-dir"])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "trace")
        .env_remove("WHARF_CONFIG")
        .env_remove("WHARF_LISTEN")
        .env_remove("WHARF_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("start wharf");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("wharf listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
    Logged { child, addr, log }
}

#[tokio::test]
async fn no_password_or_authorization_header_in_logs_or_error_bodies() {
    let dir = users_dir();
    let s = start_logged(dir.path(), &config(dir.path(), ""), "127.0.0.1:0");
    let base = format!("http://{}", s.addr);
    let http = crate::common::http().build().unwrap();
    let mut bodies = Vec::new();
    let secrets = [ALICE_PW, WRONG_PW, ADMIN_PW];
    for (user, pw) in [("alice", WRONG_PW), ("alice", ALICE_PW), ("admin", ADMIN_PW), ("nobody", WRONG_PW)] {
        for (method, path) in [
            (Method::GET, "/v2/"),
            (Method::GET, "/v2/team/app/tags/list"),
            (Method::POST, "/v2/other/x/blobs/uploads/"),
            (Method::GET, "/metrics"),
        ] {
            let r = http.request(method, format!("{base}{path}")).basic_auth(user, Some(pw)).send().await.unwrap();
            bodies.push(r.text().await.unwrap());
        }
    }
    let log_path = s.log.clone();
    drop(s);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("wharf::access"), "the access log was written (so the check below can fail)");
    for secret in secrets {
        let encoded = basic("alice", secret);
        let encoded = encoded.trim_start_matches("Basic ");
        for (what, text) in [("log", log.as_str()), ("bodies", &bodies.join("\n"))] {
            assert!(!text.contains(secret), "{what} contain a password");
            assert!(!text.contains(encoded), "{what} contain an Authorization value");
        }
    }
    assert!(!log.to_lowercase().contains("authorization: basic"), "a raw header was logged");
    assert!(!log.contains("$2y$") && !log.contains("$2b$"), "a stored hash was logged");
}

#[test]
fn non_loopback_without_access_control_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_logged(dir.path(), "", "0.0.0.0:0");
    let log_path = s.log.clone();
    drop(s);
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("NO access control"), "{log}");
    let dir = tempfile::tempdir().unwrap();
    let s = start_logged(dir.path(), "", "127.0.0.1:0");
    let log_path = s.log.clone();
    drop(s);
    assert!(!std::fs::read_to_string(log_path).unwrap().contains("NO access control"), "loopback stays quiet");
    let dir = users_dir();
    let s = start_logged(dir.path(), &config(dir.path(), ""), "0.0.0.0:0");
    let log_path = s.log.clone();
    drop(s);
    assert!(!std::fs::read_to_string(log_path).unwrap().contains("NO access control"), "configured: quiet");
}

#[test]
pub(crate) fn config_check_names_every_access_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    let check = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(wharf_bin()).args(["config", "check"]).arg(&cfg).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = check(
        "[[access]]\nrepositories = []\nusers = [\"alice\"]\nactions = [\"pull\", \"write\"]\n\n\
         [[access]]\nrepositories = [\"re:(\"]\nusers = [\"group:\"]\nactions = [\"pull\"]\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "access[0].repositories",
        "access[0].actions[1]",
        "\"write\"",
        "access[1].repositories[0]",
        "access[1].users[0]",
    ] {
        assert!(out.contains(want), "missing {want:?} in: {out}");
    }
    let (ok, out) = check(
        "[auth]\nservice = \"\"\ntoken_realm = \"ftp://user:pw@example/auth\"\ntoken_ttl_secs = 5\n\
         refresh_token_ttl_secs = 99999999\n",
    );
    assert!(!ok, "{out}");
    for want in ["auth.service", "auth.token_realm", "auth.token_ttl_secs", "auth.refresh_token_ttl_secs"] {
        assert!(out.contains(want), "missing {want:?} in: {out}");
    }
    assert!(!out.contains("user:pw"), "the realm's credentials are not echoed: {out}");
    let (ok, out) = check(&format!("[auth]\nhtpasswd = \"{}\"\n", dir.path().join("missing.htpasswd").display()));
    assert!(!ok && out.contains("auth.htpasswd") && out.contains("missing.htpasswd"), "{out}");
    std::fs::write(dir.path().join("md5.htpasswd"), "alice:$apr1$abc$def\n").unwrap();
    let (ok, out) = check(&format!("[auth]\nhtpasswd = \"{}\"\n", dir.path().join("md5.htpasswd").display()));
    assert!(!ok && out.contains("not a bcrypt hash") && !out.contains("$apr1$abc"), "{out}");
    let users = users_dir();
    let (ok, out) = check(&config(users.path(), ""));
    assert!(ok, "{out}");
}

/// Run a client binary with a private HOME; returns (success, combined output).
pub(crate) fn run_tool(bin: &Path, home: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env("PATH", "/usr/bin:/bin")
        .env("TMPDIR", home)
        .current_dir(home)
        .stdin(Stdio::null());
    die_with_parent(&mut cmd);
    let out = cmd.output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Push a real image (one tar layer holding `hello.txt` with `text`) to `image` with crane, which may carry
/// login state in `home`; runs in `home`.
pub(crate) fn crane_append(crane: &Path, home: &Path, image: &str, text: &[u8]) {
    let img_dir = home.join("img");
    std::fs::create_dir_all(&img_dir).unwrap();
    std::fs::write(img_dir.join("hello.txt"), text).unwrap();
    let tar = home.join("layer.tar");
    let st = Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&img_dir).arg(".").status().unwrap();
    assert!(st.success());
    must(run_tool(crane, home, &["--insecure", "append", "-f", tar.to_str().unwrap(), "-t", image]), "crane append");
}

pub(crate) fn must(r: (bool, String), what: &str) -> String {
    assert!(r.0, "{what} failed: {}", r.1);
    r.1
}

#[tokio::test]
async fn skopeo_copies_with_credentials() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let img = multi_arch(85, PLATFORMS, false, 20_000);
    img.write_oci_layout(&src, "v1");
    let (addr, out_dir) = (s.addr.clone(), tmp.path().join("out"));
    let alice = format!("alice:{ALICE_PW}");
    let wrong = format!("alice:{WRONG_PW}");
    let bob = format!("bob:{BOB_PW}");
    tokio::task::spawn_blocking(move || {
        let skopeo = Path::new("/usr/bin/skopeo");
        let home = tempfile::tempdir().unwrap();
        let src_ref = format!("oci:{}:v1", src.display());
        let dest = format!("docker://{addr}/team/skopeo:v1");
        let (ok, out) = run_tool(
            skopeo,
            home.path(),
            &["copy", "--all", "--dest-tls-verify=false", "--dest-creds", &wrong, &src_ref, &dest],
        );
        assert!(!ok && (out.contains("401") || out.to_lowercase().contains("unauthorized")), "wrong password: {out}");
        must(
            run_tool(
                skopeo,
                home.path(),
                &[
                    "copy",
                    "--all",
                    "--preserve-digests",
                    "--dest-tls-verify=false",
                    "--dest-creds",
                    &alice,
                    &src_ref,
                    &dest,
                ],
            ),
            "skopeo copy --all with --dest-creds",
        );
        // `skopeo login` stores the credentials (after checking them through the token flow); later commands
        // use them without --creds.
        let auth_file = home.path().join("auth.json");
        let auth_env = auth_file.to_str().unwrap().to_owned();
        let login = |user: &str, pw: &str| {
            let out = Command::new(skopeo)
                .args(["login", "--tls-verify=false", "--authfile", &auth_env, "-u", user, "-p", pw, &addr])
                .env("HOME", home.path())
                .output()
                .unwrap();
            (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        };
        let (ok, out) = login("alice", WRONG_PW);
        assert!(!ok, "skopeo login with a wrong password: {out}");
        must(login("alice", ALICE_PW), "skopeo login");
        let logged_in = format!("docker://{addr}/team/skopeo-login:v1");
        must(
            run_tool(
                skopeo,
                home.path(),
                &["copy", "--all", "--dest-tls-verify=false", "--dest-authfile", &auth_env, &src_ref, &logged_in],
            ),
            "skopeo copy --all after skopeo login",
        );
        let out_ref = format!("oci:{}:v1", out_dir.display());
        must(
            run_tool(
                skopeo,
                home.path(),
                &["copy", "--all", "--src-tls-verify=false", "--src-creds", &bob, &dest, &out_ref],
            ),
            "skopeo copy back as a group member",
        );
        let (ok, out) = run_tool(
            skopeo,
            home.path(),
            &[
                "copy",
                "--all",
                "--dest-tls-verify=false",
                "--dest-creds",
                &alice,
                &src_ref,
                &format!("docker://{addr}/readonly/x:v1"),
            ],
        );
        assert!(!ok && (out.contains("403") || out.to_lowercase().contains("denied")), "push to pull-only: {out}");
        // Anonymous pulls where a rule allows them, despite the challenge on /v2/.
        let admin = format!("admin:{ADMIN_PW}");
        let public = format!("docker://{addr}/public/skopeo:v1");
        must(
            run_tool(
                skopeo,
                home.path(),
                &["copy", "--all", "--dest-tls-verify=false", "--dest-creds", &admin, &src_ref, &public],
            ),
            "skopeo copy as admin",
        );
        must(
            run_tool(skopeo, home.path(), &["inspect", "--raw", "--tls-verify=false", "--no-creds", &public]),
            "anonymous inspect",
        );
        let (ok, out) = run_tool(skopeo, home.path(), &["inspect", "--raw", "--tls-verify=false", "--no-creds", &dest]);
        assert!(!ok, "anonymous inspect of team/*: {out}");
    })
    .await
    .unwrap();
    let r = client_as(&s, "admin", ADMIN_PW).get("/v2/team/skopeo/manifests/v1").await;
    assert_eq!(&r.body[..], &img.index.bytes[..]);
}

#[tokio::test]
async fn crane_oras_and_regctl_log_in_through_the_token_flow() {
    let Some(clients) = shared_path("clients") else {
        println!("skipped: ../shared/clients not found");
        return;
    };
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let addr = s.addr.clone();
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".docker")).unwrap();
        let h = home.path();
        let tool = |name: &str| clients.join(name);
        // crane: `auth login` stores the credentials; then push and copy under team/*.
        must(run_tool(&tool("crane"), h, &["auth", "login", &addr, "-u", "alice", "-p", ALICE_PW]), "crane auth login");
        crane_append(&tool("crane"), h, &format!("{addr}/team/crane:v1"), b"hello from crane");
        must(
            run_tool(
                &tool("crane"),
                h,
                &["--insecure", "copy", &format!("{addr}/team/crane:v1"), &format!("{addr}/team/crane2:v1")],
            ),
            "crane copy",
        );
        let (ok, out) = run_tool(
            &tool("crane"),
            h,
            &["--insecure", "copy", &format!("{addr}/team/crane:v1"), &format!("{addr}/readonly/crane:v1")],
        );
        // Through the token flow the push scope is simply not granted: the registry answers 401 insufficient_scope.
        assert!(
            !ok && ["DENIED", "403", "UNAUTHORIZED", "401"].iter().any(|w| out.contains(w)),
            "crane push to pull-only: {out}"
        );
        let catalog = must(run_tool(&tool("crane"), h, &["--insecure", "catalog", &addr]), "crane catalog");
        assert_eq!(catalog.split_whitespace().collect::<Vec<_>>(), ["team/crane", "team/crane2"], "{catalog}");

        // oras: login (plain HTTP), push an artifact, discover nothing refused.
        let (ok, out) = run_tool(&tool("oras"), h, &["login", "--plain-http", &addr, "-u", "alice", "-p", WRONG_PW]);
        assert!(!ok, "oras login with a wrong password succeeded: {out}");
        must(run_tool(&tool("oras"), h, &["login", "--plain-http", &addr, "-u", "bob", "-p", BOB_PW]), "oras login");
        std::fs::write(h.join("note.txt"), b"an artifact").unwrap();
        must(
            run_tool(
                &tool("oras"),
                h,
                &["push", "--plain-http", &format!("{addr}/team/oras:v1"), "note.txt:text/plain"],
            ),
            "oras push",
        );
        std::fs::write(h.join("sbom.json"), br#"{"sbom": true}"#).unwrap();
        must(
            run_tool(
                &tool("oras"),
                h,
                &[
                    "attach",
                    "--plain-http",
                    "--artifact-type",
                    "application/vnd.example.sbom+json",
                    &format!("{addr}/team/oras:v1"),
                    "sbom.json:application/json",
                ],
            ),
            "oras attach",
        );
        let found = must(
            run_tool(&tool("oras"), h, &["discover", "--plain-http", &format!("{addr}/team/oras:v1")]),
            "oras discover",
        );
        assert!(found.contains("application/vnd.example.sbom+json"), "discover lists the attached SBOM: {found}");

        // regctl: login, then copy within team/*.
        must(run_tool(&tool("regctl"), h, &["registry", "set", &addr, "--tls", "disabled"]), "regctl registry set");
        let (ok, out) = run_tool(&tool("regctl"), h, &["registry", "login", &addr, "-u", "alice", "-p", WRONG_PW]);
        assert!(!ok, "regctl login with a wrong password succeeded: {out}");
        must(
            run_tool(&tool("regctl"), h, &["registry", "login", &addr, "-u", "alice", "-p", ALICE_PW]),
            "regctl login",
        );
        must(
            run_tool(
                &tool("regctl"),
                h,
                &["image", "copy", &format!("{addr}/team/crane:v1"), &format!("{addr}/team/regctl:v1")],
            ),
            "regctl image copy",
        );
        let tags = must(run_tool(&tool("regctl"), h, &["tag", "ls", &format!("{addr}/team/regctl")]), "regctl tag ls");
        assert_eq!(tags.lines().next(), Some("v1"), "{tags}");
        let (ok, _) = run_tool(&tool("regctl"), h, &["tag", "ls", &format!("{addr}/other/none")]);
        assert!(!ok, "regctl listed a repository alice may not read");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn containerd_ctr_pulls_with_user_credentials() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let img = multi_arch(86, &PLATFORMS[..2], false, 4_000);
    img.push(&client_as(&s, "admin", ADMIN_PW), "team/ctr", "v1").await;
    let addr = s.addr.clone();
    tokio::task::spawn_blocking(move || {
        let ctrd = crate::external::containerd::Containerd::start();
        let reference = format!("{addr}/team/ctr:v1");
        let user = format!("alice:{ALICE_PW}");
        let wrong = format!("alice:{WRONG_PW}");
        let out = ctrd.try_ctr(&["content", "fetch", "--plain-http", "--user", &wrong, "--all-platforms", &reference]);
        assert!(!out.success, "a wrong password fetched: {}", out.stdout);
        ctrd.ctr(&["content", "fetch", "--plain-http", "--user", &user, "--all-platforms", &reference]);
        let have = ctrd.content_digests();
        for c in img.blobs.iter().chain(&img.manifests).chain([&img.index]) {
            assert!(have.contains(&c.digest.to_string()), "{} missing", c.digest);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn mirrored_namespaces_stay_pull_only_whatever_the_rules_say() {
    let upstream = Server::start();
    let img = multi_arch(87, &PLATFORMS[..1], false, 1_000);
    img.push(&upstream.client(), "library/demo", "v1").await;
    let dir = users_dir();
    let s = Server::start_config(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[auth]\nhtpasswd = \"{}\"\n\n\
         [[access]]\nrepositories = [\"*\"]\nusers = [\"alice\"]\nactions = [\"pull\", \"push\", \"delete\"]\n",
        upstream.url,
        htpasswd(dir.path())
    ));
    let alice = client_as(&s, "alice", ALICE_PW);
    let accept = format!("{}, {}", crate::images::OCI_INDEX, crate::images::DOCKER_LIST);
    let r = alice.req(Method::GET, "/v2/docker.io/library/demo/manifests/v1", &[("accept", &accept)], None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = alice.req(Method::POST, "/v2/docker.io/library/demo/blobs/uploads/", &[], None).await;
    assert_denied(&r, "push into a mirrored namespace");
    let r = alice
        .req(
            Method::PUT,
            "/v2/docker.io/library/demo/manifests/v2",
            &[("content-type", &img.index.media_type)],
            Some(img.index.bytes.clone()),
        )
        .await;
    assert_denied(&r, "manifest put into a mirrored namespace");
    // Anonymous callers are challenged for the mirror too (no rule names them).
    assert_challenge(&s.client().get("/v2/docker.io/library/demo/manifests/v1").await, "anonymous mirror pull");
}
