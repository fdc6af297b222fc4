//! `[storage] backend = "s3"`: the real binary over a real S3-compatible server (Garage, started on loopback
//! by `scripts/s3-server.sh`), as one registry and as several replicas over one bucket.
//!
//! Skipped with a message when no Garage binary is installed, unless `WHARF_REQUIRE_S3` is set (the test
//! command sets it after installing Garage), which turns a missing server into a failure.

use std::collections::HashMap;
use std::process::Command;

use reqwest::{Method, StatusCode};

use crate::common::{output_within, Client, Server};
use crate::conformance::{assert_conforms, Suite};
use crate::images::{multi_arch, noise, PLATFORMS};

/// A throw-away Garage server; stopped when dropped.
pub(crate) struct Garage {
    env: HashMap<String, String>,
    _dir: tempfile::TempDir,
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.env["GARAGE_PID"]).status();
    }
}

impl Garage {
    /// Start one, or `None` with a message when Garage is not installed and not required.
    pub(crate) fn start() -> Option<Garage> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/s3-server.sh");
        let dir = tempfile::tempdir().unwrap();
        let out =
            output_within(Command::new(script).arg(dir.path().join("garage")), std::time::Duration::from_secs(120));
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            if std::env::var_os("WHARF_REQUIRE_S3").is_some() || !why.contains("no garage binary") {
                panic!("the S3 test server did not start: {why}");
            }
            println!("skipped: no S3 test server (scripts/install-s3-server.sh installs one): {why}");
            return None;
        }
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Some(Garage { env, _dir: dir })
    }

    /// The `[storage]` table for this server's bucket under `prefix`.
    pub(crate) fn storage(&self, prefix: &str) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\nprefix = \"{prefix}\"\n\
             path_style = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            self.env["S3_BUCKET"],
            self.env["S3_ENDPOINT"],
            self.env["S3_REGION"],
            self.env["AWS_ACCESS_KEY_ID"],
            self.env["AWS_SECRET_ACCESS_KEY"],
        )
    }
}

/// `wharf ARGS --data-dir <own dir> --config <file holding toml>` with no `WHARF_*` settings from the
/// environment, warnings only, stdout and stderr piped (another machine's process on the shared bucket).
fn wharf_with(toml: &str, args: &[&str]) -> Command {
    let dir = tempfile::tempdir().unwrap().keep();
    let cfg = dir.join("wharf.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut cmd = Command::new(crate::common::wharf_bin());
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env_remove("WHARF_CONFIG")
        .env_remove("WHARF_LISTEN")
        .env_remove("WHARF_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    crate::common::die_with_parent(&mut cmd);
    cmd
}

#[test]
fn conformance_suites_pass_on_s3() {
    let Some(garage) = Garage::start() else { return };
    let s = Server::start_config(&garage.storage("plain/"));
    assert_conforms(Suite::V111, &s, "on S3");
    assert_conforms(Suite::Main, &s, "on S3");
}

/// The path of an upload location (replicas are reached under their own base URL).
fn location_path(r: &crate::common::Resp) -> String {
    let loc = r.header("location").expect("a Location header");
    match loc.find("/v2/") {
        Some(i) => loc[i..].to_owned(),
        None => loc,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_bucket() {
    let Some(garage) = Garage::start() else { return };
    let storage = garage.storage("shared/");
    let (a, b, c) = (Server::start_config(&storage), Server::start_config(&storage), Server::start_config(&storage));
    let (ca, cb, cc) = (a.client(), b.client(), c.client());

    // One chunked upload, its chunks sent to A, B and C in turn, finished on A.
    let data = noise(7, 3 * 1024 * 1024 + 123);
    let digest = oci::Digest::sha256_of(&data);
    let r = ca.req(Method::POST, "/v2/team/app/blobs/uploads/", &[], None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let mut at = location_path(&r);
    let thirds = [&data[..1_000_000], &data[1_000_000..2_000_000], &data[2_000_000..]];
    let mut offset = 0usize;
    for (client, chunk) in [&ca, &cb, &cc].into_iter().zip(thirds) {
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let r = client
            .req(
                Method::PATCH,
                &at,
                &[("content-type", "application/octet-stream"), ("content-range", &range)],
                Some(chunk.to_vec()),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "chunk {range}: {:?}", r.body);
        at = location_path(&r);
        offset += chunk.len();
    }
    let sep = if at.contains('?') { '&' } else { '?' };
    let r = ca.req(Method::PUT, &format!("{at}{sep}digest={digest}"), &[], None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Visible through every replica at once.
    for client in [&ca, &cb, &cc] {
        let r = client.get(&format!("/v2/team/app/blobs/{digest}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body == data, "the blob's bytes through {}", client.base);
    }

    // A multi-arch image pushed through A, pulled whole through C, deleted through B.
    let img = multi_arch(11, &PLATFORMS[..2], false, 64 * 1024);
    img.push(&ca, "team/app", "v1").await;
    img.pull_whole(&cc, "team/app", "v1").await.unwrap();
    let tags = cc.get("/v2/team/app/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    let catalog = cb.get("/v2/_catalog").await.json();
    assert_eq!(catalog["repositories"], serde_json::json!(["team/app"]));
    let index = img.index.digest;
    let r = cb.req(Method::DELETE, &format!("/v2/team/app/manifests/{index}"), &[], None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // At once on the replica that deleted; on the others once their one-second read cache has lapsed.
    assert_eq!(cb.get("/v2/team/app/manifests/v1").await.status, StatusCode::NOT_FOUND);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for client in [&ca, &cc] {
        while client.get("/v2/team/app/manifests/v1").await.status != StatusCode::NOT_FOUND {
            assert!(std::time::Instant::now() < deadline, "{} still serves the deleted image", client.base);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_through_two_replicas() {
    let Some(garage) = Garage::start() else { return };
    // Unsigned request bodies (what https:// endpoints get by default) through this test.
    let storage = format!("{}sign_payload = false\n", garage.storage("skopeo/"));
    let (a, b) = (Server::start_config(&storage), Server::start_config(&storage));
    let img = multi_arch(12, &PLATFORMS[..3], false, 32 * 1024);
    let layout = tempfile::tempdir().unwrap();
    img.write_oci_layout(layout.path(), "v1");
    let skopeo = |args: &[String]| {
        let mut cmd = crate::external::require_tool("skopeo", "skopeo");
        cmd.args(["--insecure-policy"]).args(args);
        let out = output_within(&mut cmd, std::time::Duration::from_secs(300));
        assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    skopeo(&[
        "copy".into(),
        "--all".into(),
        "--preserve-digests".into(),
        "--dest-tls-verify=false".into(),
        format!("oci:{}:v1", layout.path().display()),
        format!("docker://{}/team/skopeo:v1", a.addr),
    ]);
    let out = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy".into(),
        "--all".into(),
        "--preserve-digests".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{}/team/skopeo:v1", b.addr),
        format!("oci:{}:v1", out.path().display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], img.index.digest.to_string(), "digests preserved across replicas");
    let c: Client = b.client();
    img.pull_whole(&c, "team/skopeo", "v1").await.unwrap();
}

#[test]
fn a_wrong_key_stops_start_up_naming_the_store() {
    let Some(garage) = Garage::start() else { return };
    let secret = &garage.env["AWS_SECRET_ACCESS_KEY"];
    let storage = garage.storage("x/").replace(secret.as_str(), &"0".repeat(secret.len()));
    let mut cmd = wharf_with(&storage, &["serve", "--listen", "127.0.0.1:0"]);
    let out = output_within(&mut cmd, std::time::Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not serve with a wrong key: {stderr}");
    assert!(stderr.contains("content store does not answer"), "{stderr}");
    assert!(!stderr.contains(secret.as_str()), "the secret never reaches a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_fill_on_one_replica_serves_the_others_when_the_upstream_is_gone() {
    let Some(garage) = Garage::start() else { return };
    let hub = Server::start();
    let img = multi_arch(13, &PLATFORMS[..2], false, 48 * 1024);
    img.push(&hub.client(), "library/demo", "v1").await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ndefault = true\n",
        garage.storage("mirror/"),
        hub.url
    );
    let (a, b) = (Server::start_config(&config), Server::start_config(&config));
    img.pull_whole(&a.client(), "docker.io/library/demo", "v1").await.unwrap();
    let fetched = hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await;
    assert_eq!(fetched, img.blobs.len() as u64);
    drop(hub);
    // B never talked to the upstream: the blobs, manifests and tag A cached are in the bucket.
    img.pull_whole(&b.client(), "docker.io/library/demo", "v1").await.unwrap();
    assert_eq!(b.metric("wharf_mirror_blob_fills_total", &["docker.io"]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_mid_push_loses_nothing_it_acknowledged() {
    let Some(garage) = Garage::start() else { return };
    let storage = garage.storage("crash/");
    let (a, b) = (Server::start_config(&storage), Server::start_config(&storage));
    const PUSHES: usize = 12;
    let images: Vec<_> = (0..PUSHES).map(|i| multi_arch(100 + i as u64, &PLATFORMS[..2], false, 256 * 1024)).collect();
    let images = std::sync::Arc::new(images);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ca = a.client();
    let tasks: Vec<_> = (0..PUSHES)
        .map(|i| {
            let (c, images, acked) = (ca.clone(), images.clone(), acked.clone());
            // A push whose server dies panics inside its task; only a 201 for the tag counts as acknowledged.
            tokio::spawn(async move {
                images[i].push(&c, &format!("team/app{i}"), "v1").await;
                acked.lock().unwrap().push(i);
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while acked.lock().unwrap().len() < PUSHES / 3 {
        assert!(std::time::Instant::now() < deadline, "pushes did not progress");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(!a.kill_hard().success());
    let acked: Vec<usize> = acked.lock().unwrap().clone();
    for t in tasks {
        let _ = t.await;
    }
    let cb = b.client();
    for i in &acked {
        images[*i].pull_whole(&cb, &format!("team/app{i}"), "v1").await.unwrap_or_else(|e| panic!("push {i}: {e}"));
    }
    // The survivor keeps taking pushes, the interrupted ones included.
    for i in (0..PUSHES).filter(|i| !acked.contains(i)) {
        images[i].push(&cb, &format!("team/app{i}"), "v1").await;
        images[i].pull_whole(&cb, &format!("team/app{i}"), "v1").await.unwrap();
    }
    println!("{} of {PUSHES} pushes acknowledged before the kill", acked.len());
}

/// `wharf gc` with the shared bucket configuration and a data directory of its own (another machine).
fn gc_on(storage: &str, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["gc"];
    args.extend_from_slice(extra);
    wharf_with(storage, &args).spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_among_replicas_and_it_frees_what_nothing_uses() {
    let Some(garage) = Garage::start() else { return };
    let storage = garage.storage("gc/");
    let a = Server::start_config(&storage);
    let c = a.client();
    let (kept, gone) =
        (multi_arch(21, &PLATFORMS[..2], false, 8 * 1024), multi_arch(22, &PLATFORMS[..2], false, 8 * 1024));
    kept.push(&c, "team/kept", "v1").await;
    gone.push(&c, "team/gone", "v1").await;
    let r = c.req(Method::DELETE, &format!("/v2/team/gone/manifests/{}", gone.index.digest), &[], None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    // Two machines start a collection at the same moment: one runs, the other is told the store is busy.
    let (first, second) = (gc_on(&storage, &["--grace", "0s"]), gc_on(&storage, &["--grace", "0s"]));
    let outs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];
    let ran: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    let busy: Vec<_> = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("another garbage collection is running on this store"))
        .collect();
    assert_eq!((ran.len(), busy.len()), (1, 1), "{outs:?}");

    // What the deleted image alone used is gone from the bucket; the tagged image is whole.
    kept.pull_whole(&c, "team/kept", "v1").await.unwrap();
    let b = Server::start_config(&storage);
    kept.pull_whole(&b.client(), "team/kept", "v1").await.unwrap();
    for blob in &gone.blobs {
        let r = b.client().get(&format!("/v2/team/gone/blobs/{}", blob.digest)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "blob {} of the deleted image", blob.digest);
    }
    let report = String::from_utf8_lossy(&ran[0].stdout).to_string();
    assert!(report.contains("blobs"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_gets_redirect_to_presigned_urls_when_asked() {
    let Some(garage) = Garage::start() else { return };
    let hub = Server::start();
    let upstream_img = multi_arch(31, &PLATFORMS[..1], false, 16 * 1024);
    upstream_img.push(&hub.client(), "library/up", "v1").await;
    let config = format!(
        "{}redirect = true\nredirect_expiry = \"5m\"\n\n[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n",
        garage.storage("redirect/"),
        hub.url
    );
    let s = Server::start_config(&config);
    let c = s.client();
    let img = multi_arch(32, &PLATFORMS[..2], false, 64 * 1024);
    img.push(&c, "team/app", "v1").await;
    let no_follow = Client {
        base: s.url.clone(),
        http: crate::common::http().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
    };
    let plain = crate::common::http().build().unwrap();
    let endpoint = &garage.env["S3_ENDPOINT"];
    for blob in &img.blobs {
        let r = no_follow.get(&format!("/v2/team/app/blobs/{}", blob.digest)).await;
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(r.header("docker-content-digest"), Some(blob.digest.to_string()));
        let to = r.header("location").unwrap();
        assert!(to.starts_with(endpoint.as_str()) && to.contains("X-Amz-Signature="), "{to}");
        // The URL alone (no credentials of ours) fetches exactly the blob from the object store.
        let bytes = plain.get(&to).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(oci::Digest::sha256_of(&bytes), blob.digest);
    }
    // Ranges and HEAD are answered here; a blob the repository does not have is not redirected anywhere.
    let first = &img.blobs[0];
    let r = no_follow
        .req(Method::GET, &format!("/v2/team/app/blobs/{}", first.digest), &[("range", "bytes=0-9")], None)
        .await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::PARTIAL_CONTENT, &first.bytes[..10]));
    let r = no_follow.req(Method::HEAD, &format!("/v2/team/app/blobs/{}", first.digest), &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = no_follow.get(&format!("/v2/team/other/blobs/{}", first.digest)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Clients follow the redirect: a whole pull, and skopeo.
    img.pull_whole(&c, "team/app", "v1").await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = crate::external::require_tool("skopeo", "skopeo");
    cmd.args(["--insecure-policy", "copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/app:v1", s.addr))
        .arg(format!("oci:{}:v1", out.path().display()));
    let o = output_within(&mut cmd, std::time::Duration::from_secs(300));
    assert!(o.status.success(), "skopeo through redirects: {}", String::from_utf8_lossy(&o.stderr));

    // A mirror streams what it has not cached yet, then redirects.
    let blob = &upstream_img.blobs[0];
    let path = format!("/v2/docker.io/library/up/blobs/{}", blob.digest);
    upstream_img.pull_whole(&c, "docker.io/library/up", "v1").await.unwrap();
    let r = no_follow.get(&path).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "cached now");
}

#[test]
fn start_up_says_what_replicas_can_rely_on_when_the_store_ignores_conditional_writes() {
    use std::io::{BufRead, Read};
    let Some(garage) = Garage::start() else { return };
    let mut cmd = wharf_with(&garage.storage("probe/"), &["serve", "--listen", "127.0.0.1:0"]);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("wharf listening on"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    // Garage accepts a second If-None-Match create: the weaker guarantee is stated, once, at start-up.
    assert!(log.contains("ignores conditional writes") && log.contains("exactly one of two racing writers"), "{log}");
}

/// `wharf_s3_requests_total` summed over kinds, and by kind.
async fn s3_requests(s: &Server) -> (u64, String) {
    let text = s.client().get("/metrics").await.body;
    let text = String::from_utf8_lossy(&text).to_string();
    let mut total = 0;
    let mut by = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("wharf_s3_requests_total{")) {
        let (name, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        total += n;
        if n > 0 {
            by.push(format!("{}={n}", name.split('"').nth(1).unwrap()));
        }
    }
    (total, by.join(" "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_requests_per_pull_and_push_are_counted() {
    let Some(garage) = Garage::start() else { return };
    let s = Server::start_config(&garage.storage("count/"));
    let c = s.client();
    let img = multi_arch(41, &PLATFORMS[..2], false, 16 * 1024);
    let (before, _) = s3_requests(&s).await;
    img.push(&c, "team/app", "v1").await;
    let (after_push, by_push) = s3_requests(&s).await;
    img.pull_whole(&c, "team/app", "v1").await.unwrap();
    let (after_first, _) = s3_requests(&s).await;
    img.pull_whole(&c, "team/app", "v1").await.unwrap();
    let (after_second, by_pull) = s3_requests(&s).await;
    // The pull: 1 index + 2 manifests + 4 blobs = 7 registry requests.
    let http = 1 + img.manifests.len() + img.blobs.len();
    let pushes = img.blobs.len() + img.manifests.len() + 1;
    println!(
        "S3 requests: push of {pushes} objects {} ({by_push}); warm pull of {http} requests {} (cumulative {by_pull})",
        after_push - before,
        after_second - after_first
    );
    // Warm: a manifest is one GET (two by tag), a blob its link HEAD and one GET; nothing redundant.
    let warm = after_second - after_first;
    assert!(warm > 0 && warm <= 2 * http as u64, "{warm} S3 requests for {http} registry requests ({by_pull})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_on_one_machine_fills_the_cache_every_replica_serves() {
    let Some(garage) = Garage::start() else { return };
    let hub = Server::start();
    let img = multi_arch(51, &PLATFORMS[..2], false, 24 * 1024);
    img.push(&hub.client(), "library/base", "1.0.0").await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\n\
         repository = \"library/base\"\ntags = [\"1.0.0\"]\n",
        garage.storage("sync/"),
        hub.url
    );
    let out = output_within(&mut wharf_with(&config, &["sync"]), std::time::Duration::from_secs(120));
    assert!(out.status.success(), "wharf sync: {}", String::from_utf8_lossy(&out.stderr));
    drop(hub);
    // A replica that never saw the upstream serves the synced image whole.
    let s = Server::start_config(&config);
    img.pull_whole(&s.client(), "docker.io/library/base", "1.0.0").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_filling_one_blob_at_once_store_it_once_verified() {
    let Some(garage) = Garage::start() else { return };
    let hub = Server::start();
    let img = multi_arch(52, &PLATFORMS[..1], false, 6 * 1024 * 1024);
    img.push(&hub.client(), "library/big", "v1").await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ndefault = true\n",
        garage.storage("fill/"),
        hub.url
    );
    let (a, b) = (Server::start_config(&config), Server::start_config(&config));
    let layer = img.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap();
    let path = format!("/v2/docker.io/library/big/blobs/{}", layer.digest);
    let (ca, cb) = (a.client(), b.client());
    let (ra, rb) = tokio::join!(ca.get(&path), cb.get(&path));
    for r in [&ra, &rb] {
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(oci::Digest::sha256_of(&r.body), layer.digest);
    }
    drop(hub);
    // Both fills are done: a third replica reads the one object the bucket holds, bytes intact.
    let c = Server::start_config(&config);
    let r = c.client().get(&path).await;
    assert_eq!((r.status, oci::Digest::sha256_of(&r.body)), (StatusCode::OK, layer.digest.clone()));
}

impl Garage {
    /// Overwrite an object of the bucket behind Wharf's back (bit rot in the object store), with curl.
    fn overwrite(&self, key: &str, bytes: &[u8]) {
        let body = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(body.path(), bytes).unwrap();
        let sha = oci::Digest::sha256_of(bytes);
        let mut cmd = crate::external::require_tool("curl", "curl");
        cmd.args(["-sS", "-f", "-X", "PUT", "--data-binary"])
            .arg(format!("@{}", body.path().display()))
            .args(["--aws-sigv4", &format!("aws:amz:{}:s3", self.env["S3_REGION"])])
            .args(["--user", &format!("{}:{}", self.env["AWS_ACCESS_KEY_ID"], self.env["AWS_SECRET_ACCESS_KEY"])])
            .args(["-H", &format!("x-amz-content-sha256: {}", sha.hex())])
            .arg(format!("{}/{}/{key}", self.env["S3_ENDPOINT"], self.env["S3_BUCKET"]));
        let out = output_within(&mut cmd, std::time::Duration::from_secs(60));
        assert!(out.status.success(), "curl PUT {key}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_finds_an_object_rotted_in_the_bucket_and_takes_it_out_of_service() {
    let Some(garage) = Garage::start() else { return };
    let storage = garage.storage("scrub/");
    let s = Server::start_config(&storage);
    let c = s.client();
    let img = multi_arch(61, &PLATFORMS[..1], false, 32 * 1024);
    img.push(&c, "team/app", "v1").await;
    let layer = img.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap();
    let hex = layer.digest.hex();
    let mut rotten = layer.bytes.clone();
    rotten[100] ^= 1;
    garage.overwrite(&format!("scrub/blobs/sha256/{}/{hex}", &hex[..2]), &rotten);

    let out = output_within(&mut wharf_with(&storage, &["scrub"]), std::time::Duration::from_secs(120));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "one corrupt object: exit 1\n{text}");
    assert!(text.contains(hex), "{text}");
    // The rotten bytes are never served again: the blob is unknown until it is pushed again.
    assert_eq!(c.get(&format!("/v2/team/app/blobs/{}", layer.digest)).await.status, StatusCode::NOT_FOUND);
    c.push_blob("team/app", &layer.bytes).await;
    img.pull_whole(&c, "team/app", "v1").await.unwrap();
    let again = output_within(&mut wharf_with(&storage, &["scrub"]), std::time::Duration::from_secs(120));
    assert!(
        again.status.success(),
        "{}{}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_if_match_race_across_replicas_has_exactly_one_winner() {
    let Some(garage) = Garage::start() else { return };
    let storage = garage.storage("race/");
    let (a, b) = (Server::start_config(&storage), Server::start_config(&storage));
    let (ca, cb) = (a.client(), b.client());
    let imgs: Vec<_> = (0..3).map(|i| multi_arch(70 + i, &PLATFORMS[..1], false, 2048)).collect();
    let put = |c: &Client, img: &crate::images::Image, headers: Vec<(&'static str, String)>| {
        let (c, bytes, mt) = (c.clone(), img.index.bytes.clone(), img.index.media_type.clone());
        async move {
            let mut h: Vec<(&str, &str)> = vec![("content-type", mt.as_str())];
            h.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            c.req(Method::PUT, "/v2/team/app/manifests/v1", &h, Some(bytes)).await
        }
    };
    for img in &imgs {
        for blob in &img.blobs {
            ca.push_blob("team/app", &blob.bytes).await;
        }
        for m in &img.manifests {
            assert_eq!(ca.push_manifest("team/app", &m.digest.to_string(), &m.media_type, &m.bytes).await.status, 201);
        }
        let r =
            ca.push_manifest("team/app", &img.index.digest.to_string(), &img.index.media_type, &img.index.bytes).await;
        assert_eq!(r.status, 201);
    }
    let (x, y, z) = (&imgs[0], &imgs[1], &imgs[2]);
    assert_eq!(put(&ca, x, vec![("if-none-match", "*".into())]).await.status, StatusCode::CREATED);
    // Creating it again through the other replica: refused.
    assert_eq!(put(&cb, y, vec![("if-none-match", "*".into())]).await.status, StatusCode::PRECONDITION_FAILED);
    // Both replicas move v1 from x at the same moment: one wins, the other finds it moved.
    let expect = format!("\"{}\"", x.index.digest);
    let (r1, r2) =
        tokio::join!(put(&ca, y, vec![("if-match", expect.clone())]), put(&cb, z, vec![("if-match", expect.clone())]));
    let mut statuses = [r1.status.as_u16(), r2.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 412], "{:?} / {:?}", r1.body, r2.body);
    let winner = if r1.status == StatusCode::CREATED { y } else { z };
    for c in [&ca, &cb] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let got = c.get("/v2/team/app/manifests/v1").await.header("docker-content-digest").unwrap();
            if got == winner.index.digest.to_string() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{} still says {got}", c.base);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    // One history, the same through both replicas: created, then exactly one move.
    for c in [&ca, &cb] {
        let h = c.get("/_wharf/history/team/app/v1").await.json();
        let events = h["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "{h}");
        assert_eq!(events[1]["old"], x.index.digest.to_string());
        assert_eq!(events[1]["new"], winner.index.digest.to_string());
    }
}
