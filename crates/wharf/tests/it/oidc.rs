//! Workload identity against the real binary: OIDC JWTs (signed here with keys made on the spot) log in as
//! `Authorization: Bearer` and as a Basic password, with keys from a `jwks_file` and from a `jwks_url` served
//! by a small local HTTP server; the `[[access]]` rules decide (user and groups-claim rules, 401 vs 403); key
//! rotation at the URL is picked up; no token reaches the log; skopeo logs in with a token as password;
//! `wharf config check` names OIDC problems.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use ring::signature::KeyPair as _;
use serde_json::{json, Value};

use crate::auth::{must, run_tool, start_logged};
use crate::common::{wharf_bin, Client, Resp};
use crate::images::{multi_arch, PLATFORMS};

const ISS: &str = "https://kubernetes.default.svc.cluster.local";
const AUD: &str = "wharf-it";
const BUILDER: &str = "system:serviceaccount:ci:builder";
const RELEASER: &str = "system:serviceaccount:rel:bot";
const ADMIN: &str = "system:serviceaccount:ops:admin";

/// A signing key and its public JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn token(&self, sub: &str, extra: Value) -> String {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let mut claims = json!({"iss": ISS, "aud": [AUD, "https://kubernetes.default.svc"], "sub": sub,
                                "exp": now + 600, "iat": now, "nbf": now});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}

fn ed25519(kid: &str) -> Signer {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Signer {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}),
    }
}

/// RS256, as Kubernetes signs service-account tokens; the key comes from the openssl CLI.
fn rsa(dir: &Path, kid: &str) -> Signer {
    let pem = dir.join(format!("{kid}.pem"));
    let p = pem.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["genrsa", "-out", p, "2048"]);
    let n = hex::decode(run(&["rsa", "-in", p, "-noout", "-modulus"]).trim().trim_start_matches("Modulus=")).unwrap();
    Signer {
        kid: kid.into(),
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap(),
        jwk: json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB", "kid": kid, "alg": "RS256"}),
    }
}

fn jwks(keys: &[&Signer]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// `[[auth.oidc]]` with `source` (a `jwks_file = ...` or `jwks_url = ...` line), and rules: the builder
/// service account pushes `ci/*`, the `release` group (from the token's `groups` claim) pushes `shared/*`,
/// the ops account has `admin`.
fn config(source: &str) -> String {
    format!(
        "[[auth.oidc]]\nissuer = {ISS:?}\naudience = {AUD:?}\n{source}\ngroups_claim = \"groups\"\n\
         user_prefix = \"k8s:\"\n\n\
         [[access]]\nrepositories = [\"ci/*\"]\nusers = [\"k8s:{BUILDER}\"]\nactions = [\"pull\", \"push\"]\n\n\
         [[access]]\nrepositories = [\"shared/*\"]\nusers = [\"group:release\"]\nactions = [\"pull\", \"push\"]\n\n\
         [[access]]\nrepositories = [\"*\"]\nusers = [\"k8s:{ADMIN}\"]\nactions = [\"admin\"]\n"
    )
}

fn client_with(base: &str, authorization: &str) -> Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, authorization.parse().unwrap());
    Client { base: base.to_owned(), http: crate::common::http().default_headers(h).build().unwrap() }
}

fn bearer(base: &str, jwt: &str) -> Client {
    client_with(base, &format!("Bearer {jwt}"))
}

fn basic(base: &str, user: &str, password: &str) -> Client {
    client_with(base, &format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))))
}

fn assert_status(r: &Resp, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), code, "{what}");
}

async fn try_push(c: &Client, repo: &str) -> Resp {
    c.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], None).await
}

/// Every token used must be absent from the log (whole, and its signature part).
fn assert_not_logged(log: &Path, tokens: &[&str]) {
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("wharf::access"), "the access log was written (so the check can fail)");
    for t in tokens {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(t) && !log.contains(signature), "a token reached the log");
    }
}

#[tokio::test]
async fn oidc_tokens_from_a_jwks_file_log_in_as_bearer_and_basic_password() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa(dir.path(), "cluster-key-1");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key])).unwrap();
    let s = start_logged(dir.path(), &config(&format!("jwks_file = {:?}", file.to_str().unwrap())), "127.0.0.1:0");
    let base = format!("http://{}", s.addr);

    let builder = key.token(BUILDER, json!({}));
    let releaser = key.token(RELEASER, json!({"groups": ["release", "other"]}));
    let admin = key.token(ADMIN, json!({}));
    let wrong_aud = key.token(BUILDER, json!({"aud": "someone-else"}));
    let expired = key.token(BUILDER, json!({"exp": 1_000_000_000, "iat": 999_999_000, "nbf": 999_999_000}));
    let forged = rsa(dir.path(), "cluster-key-1").token(BUILDER, json!({}));

    // [[auth.oidc]] alone turns access control on: anonymous callers are challenged.
    let anon = Client { base: base.clone(), http: crate::common::http().build().unwrap() };
    assert_status(&anon.get("/v2/").await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "anonymous ping");
    assert_eq!(bearer(&base, &builder).get("/v2/").await.status, 200);

    // The builder account pushes with Bearer and with the token as Basic password (docker login -p $TOKEN).
    let img = multi_arch(91, &PLATFORMS[..1], false, 1_000);
    img.push(&bearer(&base, &builder), "ci/app", "v1").await;
    img.push(&basic(&base, "anything", &builder), "ci/app", "v2").await;
    let tags = bearer(&base, &builder).get("/v2/ci/app/tags/list").await.json();
    assert_eq!(tags["tags"], json!(["v1", "v2"]));

    // A groups-claim rule.
    img.push(&bearer(&base, &releaser), "shared/lib", "v1").await;
    assert_status(&try_push(&bearer(&base, &releaser), "ci/app").await, StatusCode::FORBIDDEN, "DENIED", "group");
    // A valid token for a user the rules do not allow there: 403.
    for c in [bearer(&base, &builder), basic(&base, "x", &builder)] {
        assert_status(&try_push(&c, "shared/lib").await, StatusCode::FORBIDDEN, "DENIED", "builder on shared");
    }
    // Invalid tokens: 401 (six failed logins; the limit is ten a minute per address).
    for (jwt, what) in [(&wrong_aud, "wrong audience"), (&expired, "expired"), (&forged, "forged signature")] {
        let r = bearer(&base, jwt).get("/v2/").await;
        assert_status(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", what);
        let r = try_push(&basic(&base, "x", jwt), "ci/app").await;
        assert_status(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", what);
    }
    // Status pages: Bearer works there too, and the admin action still decides.
    assert_eq!(bearer(&base, &admin).get("/metrics").await.status, 200);
    assert_status(&bearer(&base, &builder).get("/metrics").await, StatusCode::FORBIDDEN, "DENIED", "metrics");

    let log = s.log.clone();
    drop(s);
    assert_not_logged(&log, &[&builder, &releaser, &admin, &wrong_aud, &expired, &forged]);
}

/// A JWKS endpoint on 127.0.0.1 (OS-picked port) serving whatever the test last set.
async fn serve_jwks(body: String) -> (String, Arc<Mutex<String>>) {
    let current = Arc::new(Mutex::new(body));
    let c = current.clone();
    let app = axum::Router::new().route(
        "/openid/v1/jwks",
        axum::routing::get(move || {
            let c = c.clone();
            async move { ([("content-type", "application/json")], c.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/openid/v1/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, current)
}

#[tokio::test]
async fn oidc_keys_from_a_jwks_url_are_fetched_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (ed25519("2026-01"), ed25519("2026-02"));
    let (url, served) = serve_jwks(jwks(&[&old])).await;
    let s = start_logged(dir.path(), &config(&format!("jwks_url = {url:?}\njwks_refresh_secs = 1")), "127.0.0.1:0");
    let base = format!("http://{}", s.addr);
    let img = multi_arch(92, &PLATFORMS[..1], false, 1_000);
    let before = old.token(BUILDER, json!({}));
    img.push(&bearer(&base, &before), "ci/app", "v1").await;
    let wrong = old.token(BUILDER, json!({"aud": "nope"}));
    assert_status(&bearer(&base, &wrong).get("/v2/").await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "audience");
    assert_status(&try_push(&bearer(&base, &before), "other/x").await, StatusCode::FORBIDDEN, "DENIED", "rules");

    // The issuer rotates: the new key replaces the old one at the URL.
    *served.lock().unwrap() = jwks(&[&new]);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let after = new.token(BUILDER, json!({}));
    img.push(&basic(&base, "ci", &after), "ci/app", "v2").await;
    let r = bearer(&base, &before).get("/v2/").await;
    assert_status(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "retired key");

    let log = s.log.clone();
    drop(s);
    assert_not_logged(&log, &[&before, &wrong, &after]);
}

#[tokio::test]
async fn skopeo_copies_with_a_token_as_password() {
    if !Path::new("/usr/bin/skopeo").exists() {
        eprintln!("skipping: /usr/bin/skopeo is not installed (scripts/test.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519("k1");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key])).unwrap();
    let s = start_logged(dir.path(), &config(&format!("jwks_file = {:?}", file.to_str().unwrap())), "127.0.0.1:0");
    let src = dir.path().join("src");
    multi_arch(93, PLATFORMS, false, 20_000).write_oci_layout(&src, "v1");
    let creds = format!("k8s:{}", key.token(BUILDER, json!({})));
    let wrong = format!("k8s:{}", key.token(BUILDER, json!({"aud": "nope"})));
    let (addr, tokens) = (s.addr.clone(), [creds.clone(), wrong.clone()]);
    tokio::task::spawn_blocking(move || {
        let skopeo = Path::new("/usr/bin/skopeo");
        let home = tempfile::tempdir().unwrap();
        let src_ref = format!("oci:{}:v1", src.display());
        let dest = format!("docker://{addr}/ci/skopeo:v1");
        let copy = |creds: &str| {
            run_tool(
                skopeo,
                home.path(),
                &["copy", "--all", "--dest-tls-verify=false", "--dest-creds", creds, &src_ref, &dest],
            )
        };
        let (ok, out) = copy(&wrong);
        assert!(!ok && (out.contains("401") || out.to_lowercase().contains("unauthorized")), "wrong audience: {out}");
        must(copy(&creds), "skopeo copy with a token");
        let out = must(
            run_tool(skopeo, home.path(), &["inspect", "--raw", "--tls-verify=false", "--creds", &creds, &dest]),
            "skopeo inspect with a token",
        );
        assert!(out.contains("manifests"), "{out}");
    })
    .await
    .unwrap();
    let log = s.log.clone();
    drop(s);
    let jwts: Vec<&str> = tokens.iter().map(|c| c.trim_start_matches("k8s:")).collect();
    assert_not_logged(&log, &jwts);
}

#[test]
fn config_check_names_every_oidc_problem() {
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
        "[[auth.oidc]]\njwks_file = \"a.json\"\njwks_url = \"https://x.test/jwks\"\n\n\
         [[auth.oidc]]\nissuer = \"https://a.test\"\naudience = \"w\"\n\n\
         [[auth.oidc]]\nissuer = \"https://b.test\"\naudience = \"w\"\njwks_url = \"ftp://b.test/jwks\"\n\n\
         [[auth.oidc]]\nissuer = \"https://c.test\"\naudience = \"w\"\njwks_url = \"https://u:hunter2@c.test/jwks\"\n\n\
         [[auth.oidc]]\nissuer = \"https://c.test\"\naudience = \"w\"\njwks_url = \"https://c.test/jwks\"\n\
         jwks_refresh_secs = 0\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "auth.oidc[0].issuer",
        "auth.oidc[0].audience",
        "auth.oidc[0].jwks_url: set only one",
        "auth.oidc[1].jwks_file",
        "auth.oidc[2].jwks_url",
        "\"ftp://b.test/jwks\"",
        "auth.oidc[3].jwks_url: must not contain credentials",
        "auth.oidc[4].issuer",
        "auth.oidc[4].jwks_refresh_secs",
    ] {
        assert!(out.contains(want), "missing {want:?} in: {out}");
    }
    assert!(!out.contains("hunter2"), "credentials echoed: {out}");
    let (ok, out) = check("[[auth.oidc]]\nissuer = \"https://a.test\"\naudience = \"w\"\nunknown = 1\n");
    assert!(!ok && out.contains("unknown"), "{out}");

    let file = dir.path().join("jwks.json");
    let entry =
        format!("[[auth.oidc]]\nissuer = {ISS:?}\naudience = {AUD:?}\njwks_file = {:?}\n", file.to_str().unwrap());
    let (ok, out) = check(&entry);
    assert!(!ok && out.contains("auth.oidc[0].jwks_file") && out.contains("jwks.json"), "missing file: {out}");
    std::fs::write(&file, "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}").unwrap();
    let (ok, out) = check(&entry);
    assert!(!ok && out.contains("auth.oidc[0].jwks_file") && out.contains("usable"), "symmetric key only: {out}");
    std::fs::write(&file, jwks(&[&ed25519("k")])).unwrap();
    let (ok, out) =
        check(&format!("{entry}\n[[access]]\nrepositories = [\"*\"]\nusers = [\"*\"]\nactions = [\"pull\"]\n"));
    assert!(ok, "{out}");
}
