//! `wharf verify` against the real binary: a sound and a defective multi-arch image pushed to a running
//! server, checked in its data directory (read-only beside the server), over HTTP with `--server`, with
//! `--all`, `--json`, `--require`, `--deep` after a flipped byte, and through `GET /_wharf/verify/...`.

use std::path::Path;
use std::process::Command;

use oci::Digest;
use serde_json::json;

use crate::common::{wharf_bin, Client, Server};
use crate::images::{multi_arch, Image, OCI_INDEX};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn wharf(args: &[&str]) -> Out {
    let out = Command::new(wharf_bin())
        .args(args)
        .env_remove("WHARF_CONFIG")
        .env_remove("WHARF_LISTEN")
        .env_remove("WHARF_DATA_DIR")
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn local(data: &Path, args: &[&str]) -> Out {
    let mut all = vec!["verify", "--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    wharf(&all)
}

const TWO: &[(&str, &str, Option<&str>)] = &[("linux", "amd64", None), ("linux", "s390x", None)];

/// Push `image` with its index edited: the s390x entry claims ppc64le, so that child's config disagrees.
async fn push_defective(c: &Client, image: &Image, repo: &str, tag: &str) -> Digest {
    for b in &image.blobs {
        c.push_blob(repo, &b.bytes).await;
    }
    for m in &image.manifests {
        let r = c.push_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let mut index: serde_json::Value = serde_json::from_slice(&image.index.bytes).unwrap();
    index["manifests"][1]["platform"] = json!({ "os": "linux", "architecture": "ppc64le" });
    let bytes = serde_json::to_vec(&index).unwrap();
    let r = c.push_manifest(repo, tag, OCI_INDEX, &bytes).await;
    assert_eq!(r.status, 201, "the registry accepts it: {:?}", r.body);
    Digest::sha256_of(&bytes)
}

fn flip_byte(data: &Path, d: &Digest) {
    let hex = d.hex();
    let path = data.join("blobs").join("sha256").join(&hex[..2]).join(hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x40;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, &bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_cli_http_and_status_route() {
    let server = Server::start();
    let c = server.client();
    let sound = multi_arch(71, TWO, false, 8 * 1024);
    sound.push(&c, "team/sound", "1.0").await;
    let bad = multi_arch(72, TWO, false, 8 * 1024);
    let bad_digest = push_defective(&c, &bad, "team/bad", "1.0").await;
    let data = server.data_dir.clone();
    let mismatch = "linux/ppc64le: config says linux/s390x";

    // Local store, read-only beside the running server.
    let out = local(&data, &["team/sound:1.0"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let out = local(&data, &["team/bad:1.0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout, format!("team/bad:1.0: {mismatch}\n"));
    let out = local(&data, &[&format!("team/bad@{bad_digest}")]);
    assert_eq!(out.stdout, format!("team/bad@{bad_digest}: {mismatch}\n"));
    let out = local(&data, &["team/bad"]);
    assert_eq!((out.code, out.stdout.lines().count()), (1, 1), "{}", out.stdout);

    // JSON.
    let out = local(&data, &["--json", "team/bad:1.0"]);
    assert_eq!(out.code, 1);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let img = &v["images"][0];
    assert_eq!(img["digest"], bad_digest.to_string());
    assert_eq!(img["platforms"].as_array().unwrap().len(), 2);
    assert_eq!(img["problems"].as_array().unwrap().len(), 1);
    assert_eq!(img["problems"][0]["kind"], "platform_mismatch");
    assert_eq!(img["problems"][0]["message"], mismatch);
    let out = local(&data, &["--json", "team/sound:1.0"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((out.code, &v["ok"]), (0, &json!(true)));

    // Every repository and tag.
    let out = local(&data, &["--all"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, format!("team/bad:1.0: {mismatch}\n"));

    // Required platforms.
    let out = local(&data, &["--require", "linux/amd64", "--require", "linux/arm64", "team/sound:1.0"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "team/sound:1.0: required platform linux/arm64 is missing\n");

    // Over HTTP, as against any registry.
    let out = wharf(&["verify", "--server", &server.url, "team/bad:1.0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout, format!("team/bad:1.0: {mismatch}\n"));
    let out = wharf(&["verify", "--server", &server.url, "--deep", "team/sound:1.0"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);

    // The status route.
    let r = c.get("/_wharf/verify/team/sound/1.0").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], true);
    let r = c.get(&format!("/_wharf/verify/team/bad/{bad_digest}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], false);
    assert_eq!(r.json()["images"][0]["problems"][0]["message"], mismatch);
    assert_eq!(c.get("/_wharf/verify/justone").await.status, 400);

    // A flipped byte in a layer file: only --deep sees it (sizes still agree).
    let layer = &sound.blobs[0];
    assert!(layer.media_type.contains("layer"));
    flip_byte(&data, &layer.digest);
    let out = local(&data, &["team/sound:1.0"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let out = local(&data, &["--deep", "team/sound:1.0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!("team/sound:1.0: {}: layer content hashes to sha256:", layer.digest)),
        "{}",
        out.stdout
    );
    let r = c.get("/_wharf/verify/team/sound/1.0?deep=true").await;
    assert_eq!(r.json()["images"][0]["problems"][0]["kind"], "blob_digest");
    let out = local(&data, &["--deep", "--all"]);
    assert_eq!((out.code, out.stdout.lines().count()), (1, 2), "{}", out.stdout);
}

#[test]
fn verify_usage_and_io_errors_exit_2() {
    let out = wharf(&["verify"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = wharf(&["verify", "--all", "--server", "http://127.0.0.1:1", "a"]);
    assert_eq!(out.code, 2);
    let dir = tempfile::tempdir().unwrap();
    let out = local(&dir.path().join("nowhere"), &["team/app:1.0"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not a Wharf data directory"), "{}", out.stderr);
    let out = local(dir.path(), &["--require", "linux", "team/app:1.0"]);
    assert_eq!(out.code, 2);
    let out = wharf(&["verify", "--server", "http://127.0.0.1:1", "team/app:1.0"]);
    assert_eq!(out.code, 2, "unreachable registry: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_server_with_token_file_and_admin_only_route() {
    let server = Server::start_config(
        "[[access]]\nrepositories = [\"public/*\"]\nusers = [\"anonymous\"]\nactions = [\"pull\"]\n",
    );
    let data = server.data_dir.clone();
    let created = wharf(&[
        "--data-dir",
        data.to_str().unwrap(),
        "token",
        "create",
        "--name",
        "verifier",
        "--allow",
        "team/*:pull,push",
        "--allow",
        "*:admin",
        "--expires",
        "1d",
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let secret = created.stdout.trim().to_owned();
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, crate::external::basic_auth_value("robot", &secret));
    let robot = Client { base: server.url.clone(), http: crate::common::http().default_headers(h).build().unwrap() };
    multi_arch(73, TWO, false, 4096).push(&robot, "team/app", "1.0").await;

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    let out = wharf(&["verify", "--server", &server.url, "--token-file", token_file.to_str().unwrap(), "team/app:1.0"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let out = wharf(&["verify", "--server", &server.url, "team/app:1.0"]);
    assert_eq!(out.code, 2, "anonymous may not pull team/*: {} {}", out.stdout, out.stderr);

    // The status route needs the admin action.
    assert_eq!(server.client().get("/_wharf/verify/team/app/1.0").await.status, 401);
    let r = robot.get("/_wharf/verify/team/app/1.0").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], true);
}
