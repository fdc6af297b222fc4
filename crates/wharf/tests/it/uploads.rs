//! Bounded upload sessions, blob deletes that respect manifests, and several processes on one data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci::Digest;
use reqwest::{Method, StatusCode};

use crate::common::{die_with_parent, wharf_bin, Server};

/// Wait (generously: this is a condition, not a timing claim) until `cond` holds.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_session(c: &crate::common::Client, repo: &str) -> (reqwest::StatusCode, String, String) {
    let r = c.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], None).await;
    let loc = r.header("location").unwrap_or_default();
    let id = r.header("docker-upload-uuid").unwrap_or_default();
    (r.status, loc, id)
}

#[tokio::test]
async fn an_idle_upload_session_expires_and_its_bytes_are_swept() {
    // Long enough that the session surely works before it expires, even on a loaded machine.
    let s = Server::start_config("[storage]\nupload_expiry = \"10s\"\n");
    let c = s.client();
    let (status, loc, id) = open_session(&c, "team/app").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let r = c.req(Method::PATCH, &loc, &[("content-type", "application/octet-stream")], Some(b"abc".to_vec())).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let session_dir = s.data_dir.join("uploads").join(&id);
    assert_eq!(std::fs::read(session_dir.join("data")).unwrap(), b"abc");
    eventually("the idle session expires", || async { c.get(&loc).await.status == StatusCode::NOT_FOUND }).await;
    assert_eq!(c.get(&loc).await.error_code(), "BLOB_UPLOAD_UNKNOWN");
    let r = c.req(Method::PATCH, &loc, &[], Some(b"def".to_vec())).await;
    assert_eq!((r.status, r.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"));
    let d = Digest::sha256_of(b"abc");
    let r = c.req(Method::PUT, &format!("{loc}?digest={d}"), &[], None).await;
    assert_eq!((r.status, r.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"));
    assert_eq!(c.get(&format!("/v2/team/app/blobs/{d}")).await.status, StatusCode::NOT_FOUND);
    eventually("the background sweeper removes the bytes", || async { !session_dir.exists() }).await;
}

#[tokio::test]
async fn upload_sessions_are_capped_with_toomanyrequests() {
    let s = Server::start_config("[storage]\nmax_uploads = 2\n");
    let c = s.client();
    let (_, first, _) = open_session(&c, "team/app").await;
    let (status, _, _) = open_session(&c, "team/app").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let r = c.req(Method::POST, "/v2/team/app/blobs/uploads/", &[], None).await;
    assert_eq!((r.status, r.error_code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"));
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("limit is 2"), "{:?}", r.body);
    assert!(r.header("retry-after").is_some());
    // A monolithic push needs no session and still works at the cap.
    c.push_blob("team/app", b"small").await;
    // Cancelling a session frees its slot.
    assert_eq!(c.req(Method::DELETE, &first, &[], None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(open_session(&c, "team/app").await.0, StatusCode::ACCEPTED);
}

fn image_manifest(config: &Digest, config_len: usize, layer: &Digest, layer_len: usize) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_len}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_len}}}]}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn a_blob_a_manifest_still_uses_cannot_be_deleted() {
    let s = Server::start();
    let c = s.client();
    let config = c.push_blob("team/app", b"{}").await;
    let layer = c.push_blob("team/app", b"layer bytes").await;
    let spare = c.push_blob("team/app", b"nobody uses me").await;
    let m = image_manifest(&config, 2, &layer, 11);
    let md = Digest::sha256_of(&m);
    let r = c.push_manifest("team/app", "v1", "application/vnd.oci.image.manifest.v1+json", &m).await;
    assert_eq!(r.status, StatusCode::CREATED);
    for blob in [&layer, &config] {
        let r = c.req(Method::DELETE, &format!("/v2/team/app/blobs/{blob}"), &[], None).await;
        assert_eq!((r.status, r.error_code().as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        let msg = r.json()["errors"][0]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(&md.to_string()), "the message names the manifest: {msg}");
    }
    // The image still pulls.
    assert_eq!(c.get(&format!("/v2/team/app/blobs/{layer}")).await.status, StatusCode::OK);
    // Unused blobs delete as before; once the manifest is gone, so do its blobs.
    assert_eq!(
        c.req(Method::DELETE, &format!("/v2/team/app/blobs/{spare}"), &[], None).await.status,
        StatusCode::ACCEPTED
    );
    let r = c.req(Method::DELETE, &format!("/v2/team/app/manifests/{md}"), &[], None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        c.req(Method::DELETE, &format!("/v2/team/app/blobs/{layer}"), &[], None).await.status,
        StatusCode::ACCEPTED
    );
    // Another repository's manifest does not protect this one's link.
    let other_layer = c.push_blob("team/other", b"layer bytes").await;
    c.push_blob("team/other", b"{}").await;
    assert_eq!(
        c.push_manifest("team/other", "v1", "application/vnd.oci.image.manifest.v1+json", &m).await.status,
        StatusCode::CREATED
    );
    c.push_blob("team/app", b"layer bytes").await;
    let r = c.req(Method::DELETE, &format!("/v2/team/app/blobs/{other_layer}"), &[], None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

fn files_named_data(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named_data(&p));
        } else if p.file_name().is_some_and(|n| n == "data") {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn sync_beside_a_running_server_keeps_its_in_flight_push() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    // An upstream nobody answers: `wharf sync` opens the store, then fails to reach it (that is fine here).
    std::fs::write(
        &cfg,
        "[[upstream]]\nname = \"nowhere.test\"\nurl = \"http://127.0.0.1:9\"\nmax_attempts = 1\n\n\
         [[sync]]\nupstream = \"nowhere.test\"\nrepository = \"lib/app\"\ntags = [\"v1\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let c = s.client();

    // A slow monolithic push: 1 MiB now, the rest after the other processes ran.
    let first: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let rest = b"the end of the blob".to_vec();
    let whole = [first.clone(), rest.clone()].concat();
    let digest = Digest::sha256_of(&whole);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let url = format!("{}/v2/team/app/blobs/uploads/?digest={digest}", s.url);
    let push = tokio::spawn(async move { c.http.post(url).body(body).send().await.unwrap().status() });
    tx.send(Ok(first)).await.unwrap();
    let tmp = data.join("tmp");
    eventually("the server writes the first chunk", || async {
        files_named_data(&tmp).iter().any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    })
    .await;

    let run = |args: &[&str]| {
        Command::new(wharf_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .env_remove("WHARF_DATA_DIR")
            .env_remove("WHARF_CONFIG")
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let status = run(&["sync", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("no sync has run yet"), "{status:?}");
    let sync = run(&["sync", "--no-progress"]);
    assert!(!sync.status.success(), "the upstream is unreachable, so this sync reports a failure: {sync:?}");
    tx.send(Ok(rest)).await.unwrap();
    drop(tx);
    assert_eq!(push.await.unwrap(), StatusCode::CREATED);
    let r = s.client().get(&format!("/v2/team/app/blobs/{digest}")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, whole.len()));

    // A second server on the same directory is refused, naming it (it must exit on its own).
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut second = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second `wharf serve` on {} kept running", data.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains(&data.display().to_string()) && err.contains("another `wharf serve`"), "{err}");
}
