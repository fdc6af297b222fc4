//! The registry token flow against the real binary: `/auth/token` (GET with Basic or anonymous, the OAuth2
//! POST form with password and refresh grants), Bearer tokens on `/v2/`, the challenge's realm/service/scope,
//! scope cut-down and escalation attempts, forged, expired, wrong-audience and `alg: none` tokens, refresh
//! tokens revoked by a password change, the catalog scope, and tokens kept out of the logs.

use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode};

use crate::auth::{
    assert_challenge, assert_denied, config, must, run_tool, start_logged, users_dir, write_users, ADMIN_PW, ALICE_PW,
    BOB_PW, WRONG_PW,
};
use crate::common::{Client, Resp, Server};

/// A client that sends `Authorization: Bearer <token>` with every request.
fn bearer(s: &Server, token: &str) -> Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    Client { base: s.url.clone(), http: crate::common::http().default_headers(h).build().unwrap() }
}

/// `GET /auth/token` with optional Basic credentials and the given scopes.
async fn get_token(base: &str, creds: Option<(&str, &str)>, scopes: &[&str]) -> reqwest::Response {
    let mut q: Vec<(&str, &str)> = vec![("service", "wharf")];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    let mut r = crate::common::http().build().unwrap().get(format!("{base}/auth/token")).query(&q);
    if let Some((u, p)) = creds {
        r = r.basic_auth(u, Some(p));
    }
    r.send().await.unwrap()
}

async fn token_json(base: &str, creds: Option<(&str, &str)>, scopes: &[&str]) -> serde_json::Value {
    let r = get_token(base, creds, scopes).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

/// The `access` claim of a token (read without verifying: the server's answer is what is being tested).
fn access(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["access"].clone()
}

fn tok(v: &serde_json::Value) -> String {
    v["token"].as_str().unwrap().to_owned()
}

fn assert_insufficient(r: &Resp, scope: &str, what: &str) {
    assert_challenge(r, what);
    let c = r.header("www-authenticate").unwrap();
    assert!(c.contains(&format!("scope=\"{scope}\"")) && c.contains("error=\"insufficient_scope\""), "{what}: {c}");
}

#[tokio::test]
async fn tokens_grant_what_the_rules_allow_and_nothing_more() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    // The challenge names the scope a request needs.
    let r = s.client().get("/v2/team/app/manifests/v1").await;
    assert_challenge(&r, "anonymous pull");
    assert!(r.header("www-authenticate").unwrap().contains("scope=\"repository:team/app:pull\""));
    let r = s.client().req(Method::POST, "/v2/team/app/blobs/uploads/", &[], None).await;
    assert!(r.header("www-authenticate").unwrap().contains("scope=\"repository:team/app:pull,push\""));

    // alice asks for everything on team/app, push on readonly/x, a glob, and a malformed scope.
    let v = token_json(
        &s.url,
        Some(("alice", ALICE_PW)),
        &[
            "repository:team/app:pull,push,delete",
            "repository:readonly/x:pull,push,delete",
            "repository:team/*:pull",
            "junk",
        ],
    )
    .await;
    assert_eq!(
        access(&tok(&v)),
        serde_json::json!([
            {"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete"]},
            {"type": "repository", "name": "readonly/x", "actions": ["pull"]},
        ]),
        "escalation to push on a pull-only rule, and a glob scope, are cut"
    );
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("refresh_token").is_none(), "no refresh token unless asked for");

    let alice = bearer(&s, &tok(&v));
    let img = crate::images::multi_arch(501, &crate::images::PLATFORMS[..1], false, 1_000);
    img.push(&alice, "team/app", "v1").await;
    assert_eq!(alice.get("/v2/team/app/manifests/v1").await.status, StatusCode::OK);
    // The same token on another repository: the scope is missing, so the client is told which one to ask for.
    assert_insufficient(
        &alice.get("/v2/team/other/tags/list").await,
        "repository:team/other:pull",
        "token for team/app on team/other",
    );
    assert_insufficient(
        &alice.req(Method::POST, "/v2/readonly/x/blobs/uploads/", &[], None).await,
        "repository:readonly/x:pull,push",
        "push with a pull-only token",
    );
    // Anonymous tokens: pull where anonymous may pull, nothing elsewhere.
    let anon = token_json(&s.url, None, &["repository:public/p:pull,push", "repository:team/app:pull"]).await;
    assert_eq!(
        access(&tok(&anon)),
        serde_json::json!([{"type": "repository", "name": "public/p", "actions": ["pull"]}])
    );
    let anon = bearer(&s, &tok(&anon));
    assert_eq!(anon.get("/v2/public/p/tags/list").await.status, StatusCode::NOT_FOUND, "allowed, nothing there");
    assert_insufficient(&anon.get("/v2/team/app/tags/list").await, "repository:team/app:pull", "anonymous token");
    // Wrong credentials get no token; a wrong service is refused.
    let r = get_token(&s.url, Some(("alice", WRONG_PW)), &["repository:team/app:pull"]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reqwest::get(format!("{}/auth/token?service=other", s.url)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A token is not a credential for the token endpoint.
    let r = crate::common::http()
        .build()
        .unwrap()
        .get(format!("{}/auth/token", s.url))
        .bearer_auth(tok(&v))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let good = tok(&token_json(&s.url, Some(("alice", ALICE_PW)), &["repository:team/app:pull"]).await);
    assert_eq!(bearer(&s, &good).get("/v2/team/app/tags/list").await.status, StatusCode::NOT_FOUND);

    // The key the server generated is in its store; sign tokens with it to vary one claim at a time.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.data_dir.join("meta/auth/token-signing-key")).unwrap()).unwrap();
    let pkcs8 = base64::engine::general_purpose::STANDARD.decode(doc["pkcs8"].as_str().unwrap()).unwrap();
    let kid = doc["kid"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sign = |claims: serde_json::Value, key: &[u8], kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ed_der(key)).unwrap()
    };
    let claims = |aud: &str, exp: u64| {
        serde_json::json!({
            "iss": "wharf", "sub": "alice", "aud": aud, "exp": exp, "nbf": now - 10, "iat": now - 10, "jti": "t",
            "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
        })
    };
    let control = sign(claims("wharf", now + 300), &pkcs8, &kid);
    assert_eq!(bearer(&s, &control).get("/v2/team/app/tags/list").await.status, StatusCode::NOT_FOUND, "control");
    let expired = sign(claims("wharf", now - 120), &pkcs8, &kid);
    assert_challenge(&bearer(&s, &expired).get("/v2/team/app/tags/list").await, "expired token");
    let wrong_aud = sign(claims("elsewhere", now + 300), &pkcs8, &kid);
    assert_challenge(&bearer(&s, &wrong_aud).get("/v2/team/app/tags/list").await, "wrong audience");
    let other_key =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref().to_vec();
    let forged = sign(claims("wharf", now + 300), &other_key, &kid);
    assert_challenge(&bearer(&s, &forged).get("/v2/team/app/tags/list").await, "wrong signature");
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&claims("wharf", now + 300))
    );
    assert_challenge(&bearer(&s, &none).get("/v2/team/app/tags/list").await, "alg none");
    // A valid token whose subject lost the right since it was issued: the rules still decide (403).
    let mallory = sign(
        serde_json::json!({
            "iss": "wharf", "sub": "bob", "aud": "wharf", "exp": now + 300, "nbf": now - 10, "iat": now - 10,
            "jti": "t", "access": [{"type": "repository", "name": "readonly/x", "actions": ["pull"]}],
        }),
        &pkcs8,
        &kid,
    );
    assert_denied(&bearer(&s, &mallory).get("/v2/readonly/x/tags/list").await, "subject not allowed by the rules");
}

#[tokio::test]
async fn oauth2_form_refresh_tokens_and_password_changes() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), "reload_interval_secs = 1"));
    let http = crate::common::http().build().unwrap();
    let post = |form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = format!("{}/auth/token", s.url);
        async move { http.post(url).form(&form).send().await.unwrap() }
    };
    let r = post(vec![
        ("grant_type", "password".into()),
        ("username", "alice".into()),
        ("password", ALICE_PW.into()),
        ("service", "wharf".into()),
        ("client_id", "docker".into()),
        ("access_type", "offline".into()),
        ("scope", "repository:team/app:pull repository:readonly/x:push".into()),
    ])
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:team/app:pull");
    let refresh = v["refresh_token"].as_str().expect("offline access gives a refresh token").to_owned();
    assert!(
        bearer(&s, &refresh).get("/v2/team/app/tags/list").await.status == StatusCode::UNAUTHORIZED,
        "a refresh token is not an access token"
    );
    let r = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
        ("service", "wharf".into()),
        ("scope", "repository:team/app:pull,push".into()),
    ])
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:team/app:pull,push");
    assert_eq!(bearer(&s, &tok(&v)).get("/v2/team/app/tags/list").await.status, StatusCode::NOT_FOUND);
    // Wrong password and unknown grant types.
    let r = post(vec![("grant_type", "password".into()), ("username", "alice".into()), ("password", WRONG_PW.into())])
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post(vec![("grant_type", "client_credentials".into())]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A password change revokes the refresh token.
    write_users(dir.path(), &[("alice", "a-new-Pa55-w0rd"), ("bob", BOB_PW), ("admin", ADMIN_PW)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = post(vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh.clone())]).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "refresh token still accepted after the password changed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn catalog_through_a_token_lists_for_its_subject() {
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let admin = crate::auth::client_as(&s, "admin", ADMIN_PW);
    let img = crate::images::multi_arch(502, &crate::images::PLATFORMS[..1], false, 100);
    for repo in ["team/a", "other/b", "readonly/c"] {
        img.push(&admin, repo, "v1").await;
    }
    let no_catalog = tok(&token_json(&s.url, Some(("alice", ALICE_PW)), &["repository:team/a:pull"]).await);
    assert_insufficient(
        &bearer(&s, &no_catalog).get("/v2/_catalog").await,
        "registry:catalog:*",
        "catalog without the scope",
    );
    let with = tok(&token_json(&s.url, Some(("alice", ALICE_PW)), &["registry:catalog:*"]).await);
    let r = bearer(&s, &with).get("/v2/_catalog").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["repositories"], serde_json::json!(["readonly/c", "team/a"]));
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let dir = users_dir();
    let s = start_logged(dir.path(), &config(dir.path(), ""), "127.0.0.1:0");
    let base = format!("http://{}", s.addr);
    let v = token_json(&base, Some(("alice", ALICE_PW)), &["repository:team/app:pull"]).await;
    let token = tok(&v);
    let r = crate::common::http()
        .build()
        .unwrap()
        .get(format!("{base}/v2/team/app/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = crate::common::http()
        .build()
        .unwrap()
        .get(format!("{base}/v2/team/x/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    let log_path = s.log.clone();
    drop(s);
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("token issued"), "the issue was logged (so the check below can fail)");
    let signature = token.rsplit('.').next().unwrap();
    for (what, text) in [("log", log.as_str()), ("body", body.as_str())] {
        assert!(!text.contains(signature), "{what} contains a token");
        assert!(!text.contains(ALICE_PW), "{what} contains a password");
    }
}

#[tokio::test]
async fn podman_logs_in_and_pulls_through_the_token_flow() {
    let Some(clients) = crate::common::shared_path("clients") else {
        println!("skipped: ../shared/clients not found (crane builds the image)");
        return;
    };
    let Ok(podman) = which("podman") else {
        println!("skipped: podman is not installed (scripts/test.sh installs it)");
        return;
    };
    let dir = users_dir();
    let s = Server::start_config(&config(dir.path(), ""));
    let addr = s.addr.clone();
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::fs::create_dir_all(h.join(".docker")).unwrap();
        // A real image (a tar layer) pushed by crane as alice.
        let crane = clients.join("crane");
        must(run_tool(&crane, h, &["auth", "login", &addr, "-u", "alice", "-p", ALICE_PW]), "crane auth login");
        let image = format!("{addr}/team/podman:v1");
        crate::auth::crane_append(&crane, h, &image, b"hello from podman");
        // podman with its own storage (vfs, so no kernel overlay is needed) and auth file.
        let root = h.join("storage");
        let auth_file = h.join("auth.json");
        let podman_args = |rest: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = [
                "--root",
                root.to_str().unwrap(),
                "--runroot",
                h.join("run").to_str().unwrap(),
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend(rest.iter().map(|s| s.to_string()));
            v
        };
        let run = |rest: &[&str]| {
            let args = podman_args(rest);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut cmd = std::process::Command::new(&podman);
            cmd.args(&args)
                .env("REGISTRY_AUTH_FILE", &auth_file)
                .env("HOME", h)
                .env("XDG_RUNTIME_DIR", h.join("run"))
                .env("TMPDIR", h);
            let out = cmd.output().unwrap();
            (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        };
        let (ok, out) = run(&["pull", "--tls-verify=false", &image]);
        assert!(!ok, "anonymous pull of team/* succeeded: {out}");
        let (ok, out) = run(&["login", "--tls-verify=false", "-u", "alice", "-p", WRONG_PW, &addr]);
        assert!(!ok, "podman login with a wrong password succeeded: {out}");
        must(run(&["login", "--tls-verify=false", "-u", "alice", "-p", ALICE_PW, &addr]), "podman login");
        must(run(&["pull", "--tls-verify=false", &image]), "podman pull");
        let images = must(run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "podman images");
        assert!(images.contains("team/podman:v1"), "{images}");
        let auth = std::fs::read_to_string(&auth_file).unwrap();
        assert!(auth.contains(&addr), "podman stored its login: {auth}");
    })
    .await
    .unwrap();
}

/// The path of an installed program.
fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or(())
}

#[tokio::test]
async fn skopeo_and_crane_use_the_token_flow_over_tls_with_a_private_ca() {
    use crate::tls::{tls_keys, Pki, TlsServer};
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x3001");
    let users = users_dir();
    let s = TlsServer::start(&format!("{}\n{}", tls_keys(&cert, &key), config(users.path(), "")));
    // The challenge names the https token endpoint of this server.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).unwrap()).unwrap();
    let http = crate::common::http().add_root_certificate(ca).build().unwrap();
    let r = http.get(format!("https://{}/v2/", s.addr)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with(&format!("Bearer realm=\"https://{}/auth/token\"", s.addr)), "{challenge}");

    let img = crate::images::multi_arch(503, &crate::images::PLATFORMS[..2], false, 20_000);
    let layout = pki.path("layout");
    img.write_oci_layout(&layout, "v1");
    let certs = pki.cert_dir();
    let addr = s.addr.clone();
    let ca_file = pki.ca();
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let skopeo = std::path::Path::new("/usr/bin/skopeo");
        let dest = format!("docker://{addr}/team/tls:v1");
        let src = format!("oci:{}:v1", layout.display());
        let cert_dir = certs.to_str().unwrap();
        let alice = format!("alice:{ALICE_PW}");
        let (ok, out) = run_tool(skopeo, h, &["copy", "--all", "--dest-cert-dir", cert_dir, &src, &dest]);
        assert!(!ok, "anonymous push over TLS succeeded: {out}");
        must(
            run_tool(
                skopeo,
                h,
                &[
                    "copy",
                    "--all",
                    "--preserve-digests",
                    "--dest-cert-dir",
                    cert_dir,
                    "--dest-creds",
                    &alice,
                    &src,
                    &dest,
                ],
            ),
            "skopeo push",
        );
        let raw = must(
            run_tool(skopeo, h, &["inspect", "--raw", "--cert-dir", cert_dir, "--creds", &alice, &dest]),
            "skopeo inspect",
        );
        assert!(raw.as_bytes().starts_with(&img.index.bytes), "the index arrives byte-identical: {raw}");
        let Some(clients) = crate::common::shared_path("clients") else {
            println!("skipped crane: ../shared/clients not found");
            return;
        };
        let crane = |args: &[&str]| {
            let mut cmd = std::process::Command::new(clients.join("crane"));
            cmd.args(args).env_clear().env("HOME", h).env("PATH", "/usr/bin:/bin").env("SSL_CERT_FILE", &ca_file);
            let out = cmd.output().unwrap();
            (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        };
        must(crane(&["auth", "login", &addr, "-u", "bob", "-p", BOB_PW]), "crane auth login over TLS");
        must(crane(&["copy", &format!("{addr}/team/tls:v1"), &format!("{addr}/team/tls2:v1")]), "crane copy over TLS");
        let digest = must(crane(&["digest", &format!("{addr}/team/tls2:v1")]), "crane digest");
        assert_eq!(digest.trim(), img.index.digest.to_string());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn containerd_pulls_a_mirrored_image_through_hosts_toml_with_credentials() {
    use crate::external::containerd::{write_hosts_toml, Containerd};
    // The upstream ("docker.io"): a plain Wharf holding library/demo.
    let hub = Server::start();
    let demo = crate::images::multi_arch(504, &crate::images::PLATFORMS[..2], false, 4_000);
    demo.push(&hub.client(), "library/demo", "v1").await;
    // The mirror, with access control: alice may pull mirrored Docker Hub content, nobody else may.
    let users = users_dir();
    let s = Server::start_config(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[auth]\nhtpasswd = \"{}\"\n\n\
         [[access]]\nrepositories = [\"docker.io/*\"]\nusers = [\"alice\"]\nactions = [\"pull\"]\n",
        hub.url,
        users.path().join("users.htpasswd").display()
    ));
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(hosts.path(), "docker.io", &s.url);
    let hosts_dir = hosts.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let ctrd = Containerd::start();
        let h = hosts_dir.to_str().unwrap();
        let reference = "docker.io/library/demo:v1";
        let out = ctrd.try_ctr(&["content", "fetch", "--hosts-dir", h, "--all-platforms", reference]);
        assert!(!out.success, "an anonymous pull through the mirror succeeded: {}", out.stdout);
        let wrong = format!("alice:{WRONG_PW}");
        let out = ctrd.try_ctr(&["content", "fetch", "--hosts-dir", h, "--user", &wrong, "--all-platforms", reference]);
        assert!(!out.success, "a wrong password pulled: {}", out.stdout);
        let alice = format!("alice:{ALICE_PW}");
        let out = ctrd.try_ctr(&["content", "fetch", "--hosts-dir", h, "--user", &alice, "--all-platforms", reference]);
        assert!(out.success, "ctr --user through hosts.toml: {}\n{}", out.stdout, out.stderr);
        let have = ctrd.content_digests();
        for c in demo.blobs.iter().chain(&demo.manifests).chain([&demo.index]) {
            assert!(have.contains(&c.digest.to_string()), "{} missing", c.digest);
        }
    })
    .await
    .unwrap();
}
