//! Crash safety: `kill -9` of `serve` in the middle of 100 concurrent pushes (monolithic and chunked), then a
//! restart on the same data directory. Whatever is visible afterwards hashes to its digest, no upload leaves
//! partial content behind a digest, every acknowledged push is intact, and the server takes new pushes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oci::Digest;
use reqwest::{Method, StatusCode};
use serde_json::json;

use futures_util::StreamExt;

use crate::common::Server;
use crate::images::{noise, OCI_MANIFEST};

const PUSHES: usize = 100;
/// Kill once this many pushes (blobs and manifest) are acknowledged; the rest are then in flight or queued.
const KILL_AFTER: usize = 30;
const CHUNK: usize = 256 * 1024;

/// How one push sends its layer.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `POST ?digest=` with the whole body.
    Monolithic,
    /// `POST ?digest=` with a body that trickles out chunk by chunk (the kill can land mid-body).
    SlowMonolithic,
    /// `POST`, a `PATCH` per chunk, `PUT ?digest=`.
    Chunked,
    /// `POST`, `PATCH`es with a pause between them, `PUT ?digest=` carrying the last chunk.
    SlowChunked,
    /// `POST ?digest=` whose body stops half-way and never ends: certainly cut by the kill.
    StalledMonolithic,
    /// `POST`, one `PATCH`, then a `PATCH` whose body stops half-way: certainly cut by the kill.
    StalledChunked,
}

/// One push: a layer, a config and the manifest over them, tagged `t<i>` in `crash/r<i % 10>`.
struct Job {
    repo: String,
    tag: String,
    mode: Mode,
    layer: Bytes,
    layer_digest: Digest,
    config: Bytes,
    config_digest: Digest,
    manifest: Bytes,
    manifest_digest: Digest,
}

/// What the server acknowledged, recorded as the answers arrive.
#[derive(Default)]
struct Acks {
    layers: Vec<bool>,
    configs: Vec<bool>,
    manifests: Vec<bool>,
    /// Chunked sessions still open at the kill: job → (upload URL, bytes acknowledged by PATCH).
    open_sessions: BTreeMap<usize, (String, usize)>,
    /// Answers other than the expected success (the kill only causes transport errors, never a status).
    refused: Vec<String>,
}

fn job(i: usize) -> Job {
    let mode = match i % 20 {
        19 => Mode::StalledMonolithic,
        9 => Mode::StalledChunked,
        _ => [Mode::Monolithic, Mode::SlowMonolithic, Mode::Chunked, Mode::SlowChunked][i % 4],
    };
    // 200 KiB .. ~3.2 MiB, varied per job
    let mut size = 200 * 1024 + (i * 7919 % 100) * 30 * 1024 + i;
    if matches!(mode, Mode::StalledChunked) {
        size = size.max(3 * CHUNK); // one full PATCH, then the stalled one
    }
    let layer = Bytes::from(noise(9_000 + i as u64, size));
    let layer_digest = Digest::sha256_of(&layer);
    let config = Bytes::from(serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "job": i})).unwrap());
    let config_digest = Digest::sha256_of(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = Digest::sha256_of(&manifest);
    Job {
        repo: format!("crash/r{}", i % 10),
        tag: format!("t{i}"),
        mode,
        layer,
        layer_digest,
        config,
        config_digest,
        manifest: Bytes::from(manifest),
        manifest_digest,
    }
}

fn location(base: &str, r: &reqwest::Response) -> Option<String> {
    let loc = r.headers().get("location")?.to_str().ok()?;
    Some(if loc.starts_with("http") { loc.to_owned() } else { format!("{base}{loc}") })
}

fn with_query(url: &str, q: &str) -> String {
    format!("{url}{}{q}", if url.contains('?') { '&' } else { '?' })
}

/// A body that yields `data` in chunks with a pause before each, so the request is in flight for a while.
fn slow_body(data: Bytes) -> reqwest::Body {
    let chunks: Vec<Bytes> =
        (0..data.len()).step_by(CHUNK).map(|o| data.slice(o..(o + CHUNK).min(data.len()))).collect();
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
        let c = it.next()?;
        tokio::time::sleep(Duration::from_millis(40)).await;
        Some((Ok::<Bytes, std::io::Error>(c), it))
    });
    reqwest::Body::wrap_stream(stream)
}

/// A body that sends the first half of `data` and then waits forever (until the connection dies).
fn stalled_body(data: Bytes) -> reqwest::Body {
    let half = data.slice(..data.len() / 2);
    let stream = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(half)])
        .chain(futures_util::stream::once(futures_util::future::pending()));
    reqwest::Body::wrap_stream(stream)
}

/// How a request body is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    Fast,
    Slow,
    Stalled,
}

fn body(data: Bytes, pace: Pace) -> reqwest::Body {
    match pace {
        Pace::Fast => reqwest::Body::from(data),
        Pace::Slow => slow_body(data),
        Pace::Stalled => stalled_body(data),
    }
}

/// Push a blob monolithically; the server's answer.
async fn push_monolithic(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    data: Bytes,
    pace: Pace,
) -> reqwest::Result<StatusCode> {
    let d = Digest::sha256_of(&data);
    let len = data.len();
    let body = body(data, pace);
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(body)
        .send()
        .await?;
    Ok(r.status())
}

/// Push a blob in a chunked session; records the session and its acknowledged bytes in `acks`.
async fn push_chunked(
    http: &reqwest::Client,
    base: &str,
    (i, repo): (usize, &str),
    data: &Bytes,
    pace: Pace,
    acks: &Mutex<Acks>,
) -> reqwest::Result<StatusCode> {
    let r = http.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "upload start");
    let mut url = location(base, &r).expect("upload Location");
    acks.lock().unwrap().open_sessions.insert(i, (url.clone(), 0));
    let mut offset = 0;
    // All but the last chunk by PATCH; the last one rides on the closing PUT.
    while data.len() - offset > CHUNK {
        if pace == Pace::Slow {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        // A stalled session sends its second PATCH (the rest of the blob) only half-way.
        let stall = pace == Pace::Stalled && offset > 0;
        let end = if stall { data.len() } else { offset + CHUNK };
        let r = http
            .patch(&url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{}", end - 1))
            .header("content-length", end - offset)
            .body(body(data.slice(offset..end), if stall { Pace::Stalled } else { Pace::Fast }))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH {offset}-{}", end - 1);
        url = location(base, &r).expect("PATCH Location");
        offset = end;
        acks.lock().unwrap().open_sessions.insert(i, (url.clone(), offset));
    }
    let r = http
        .put(with_query(&url, &format!("digest={}", Digest::sha256_of(data))))
        .header("content-type", "application/octet-stream")
        .header("content-length", data.len() - offset)
        .body(data.slice(offset..))
        .send()
        .await?;
    let status = r.status();
    if status == StatusCode::CREATED {
        acks.lock().unwrap().open_sessions.remove(&i);
    }
    Ok(status)
}

async fn run_job(
    http: reqwest::Client,
    base: String,
    jobs: Arc<Vec<Job>>,
    i: usize,
    acks: Arc<Mutex<Acks>>,
    done: Arc<AtomicUsize>,
) {
    let j = &jobs[i];
    let layer_ok = match j.mode {
        Mode::Monolithic => push_monolithic(&http, &base, &j.repo, j.layer.clone(), Pace::Fast).await,
        Mode::SlowMonolithic => push_monolithic(&http, &base, &j.repo, j.layer.clone(), Pace::Slow).await,
        Mode::StalledMonolithic => push_monolithic(&http, &base, &j.repo, j.layer.clone(), Pace::Stalled).await,
        Mode::Chunked => push_chunked(&http, &base, (i, &j.repo), &j.layer, Pace::Fast, &acks).await,
        Mode::SlowChunked => push_chunked(&http, &base, (i, &j.repo), &j.layer, Pace::Slow, &acks).await,
        Mode::StalledChunked => push_chunked(&http, &base, (i, &j.repo), &j.layer, Pace::Stalled, &acks).await,
    };
    let refused = |what: &str, status: StatusCode| {
        acks.lock().unwrap().refused.push(format!("push {i}: {what} answered {status}"));
    };
    match layer_ok {
        Ok(StatusCode::CREATED) => {}
        Ok(status) => return refused("layer", status),
        Err(_) => return,
    }
    acks.lock().unwrap().layers[i] = true;
    match push_monolithic(&http, &base, &j.repo, j.config.clone(), Pace::Fast).await {
        Ok(StatusCode::CREATED) => {}
        Ok(status) => return refused("config", status),
        Err(_) => return,
    }
    acks.lock().unwrap().configs[i] = true;
    let r = http
        .put(format!("{base}/v2/{}/manifests/{}", j.repo, j.tag))
        .header("content-type", OCI_MANIFEST)
        .body(j.manifest.clone())
        .send()
        .await;
    match r {
        Ok(r) if r.status() == StatusCode::CREATED => {
            acks.lock().unwrap().manifests[i] = true;
            done.fetch_add(1, SeqCst);
        }
        Ok(r) => refused("manifest", r.status()),
        Err(_) => {}
    }
}

/// Every committed blob file `blobs/<algo>/<2 hex>/<hex>` holds exactly the content its name says; returns
/// how many there are.
fn assert_committed_blobs_hash_to_their_names(data: &Path) -> usize {
    let mut n = 0;
    let root = data.join("blobs").join("sha256");
    let Ok(prefixes) = std::fs::read_dir(&root) else { return 0 };
    for p in prefixes {
        let p = p.unwrap().path();
        let prefix = p.file_name().unwrap().to_str().unwrap().to_owned();
        for f in std::fs::read_dir(&p).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_str().unwrap().to_owned();
            if name.starts_with('.') || name.contains(".tmp") {
                // an unnamed temp file is not a committed blob (it is only swept, never served)
                continue;
            }
            assert!(name.starts_with(&prefix) && name.len() == 64, "stray file {}", f.display());
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(Digest::sha256_of(&bytes).hex(), name, "committed blob {} has other content", f.display());
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_pushes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &[]);
    let base = server.url.clone();
    let acks = Arc::new(Mutex::new(Acks {
        layers: vec![false; PUSHES],
        configs: vec![false; PUSHES],
        manifests: vec![false; PUSHES],
        open_sessions: BTreeMap::new(),
        refused: Vec::new(),
    }));
    let done = Arc::new(AtomicUsize::new(0));
    let http = crate::common::http().pool_max_idle_per_host(PUSHES).build().unwrap();
    let jobs: Arc<Vec<Job>> = Arc::new((0..PUSHES).map(job).collect());
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..PUSHES)
        .map(|i| tokio::spawn(run_job(http.clone(), base.clone(), jobs.clone(), i, acks.clone(), done.clone())))
        .collect();

    let stalled = |i: usize| matches!(jobs[i].mode, Mode::StalledMonolithic | Mode::StalledChunked);
    while done.load(SeqCst) < KILL_AFTER {
        let ended = tasks.iter().enumerate().filter(|(i, t)| stalled(*i) || t.is_finished()).count();
        assert!(
            ended < PUSHES,
            "every push that can end did, with only {} acknowledged: {:?}",
            done.load(SeqCst),
            acks.lock().unwrap().refused
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL: no shutdown code runs.
    let killed_at = started.elapsed();
    let status = server.kill_hard();
    assert!(!status.success());
    // Freeze what was acknowledged before the kill; answers still arriving after it are not counted.
    let (layers, configs, manifests, sessions) = {
        let a = acks.lock().unwrap();
        assert!(a.refused.is_empty(), "the server refused pushes before the kill: {:?}", a.refused);
        (a.layers.clone(), a.configs.clone(), a.manifests.clone(), a.open_sessions.clone())
    };
    for t in tasks {
        t.await.unwrap();
    }
    let acked = manifests.iter().filter(|m| **m).count();
    let in_flight = PUSHES - acked;
    println!(
        "killed after {:.1} s with {acked} pushes acknowledged, {in_flight} not, {} chunked sessions open",
        killed_at.as_secs_f64(),
        sessions.len()
    );
    // The stalled pushes (one in ten) cannot have finished.
    assert!(in_flight >= PUSHES / 10, "pushes were in flight at the kill");
    for i in (0..PUSHES).filter(|i| stalled(*i)) {
        assert!(!layers[i], "stalled push {i} was acknowledged");
    }

    // Committed files on disk, before the restart can sweep anything.
    let on_disk = assert_committed_blobs_hash_to_their_names(&data);

    let server = Server::start_with(&data, &[]);
    let c = server.client();
    let mut visible = (0, 0);
    for i in 0..PUSHES {
        let j = &jobs[i];
        for (digest, bytes, acked) in
            [(&j.layer_digest, &j.layer, layers[i]), (&j.config_digest, &j.config, configs[i])]
        {
            let r = c.get(&format!("/v2/{}/blobs/{digest}", j.repo)).await;
            if acked {
                assert_eq!(r.status, 200, "acknowledged blob {digest} of push {i} is gone");
            }
            if r.status == 200 {
                assert_eq!(Digest::sha256_of(&r.body), *digest, "blob {digest} of push {i} has other content");
                assert_eq!(r.body, *bytes);
                visible.0 += 1;
            } else {
                assert_eq!(r.status, 404, "blob {digest} of push {i}");
            }
        }
        for reference in [j.tag.clone(), j.manifest_digest.to_string()] {
            let r = c
                .req(Method::GET, &format!("/v2/{}/manifests/{reference}", j.repo), &[("accept", OCI_MANIFEST)], None)
                .await;
            if manifests[i] {
                assert_eq!(r.status, 200, "acknowledged manifest {reference} of push {i} is gone");
            }
            if r.status == 200 {
                assert_eq!(Digest::sha256_of(&r.body), j.manifest_digest, "manifest {reference} of push {i}");
                assert_eq!(r.header("docker-content-digest"), Some(j.manifest_digest.to_string()));
                visible.1 += 1;
            } else {
                assert_eq!(r.status, 404, "manifest {reference} of push {i}");
            }
        }
    }
    println!("after restart: {} blobs and {} manifest references visible, {on_disk} blob files", visible.0, visible.1);

    // A chunked session cut by the kill either is gone or resumes exactly where the server says it stands.
    let mut resumed = 0;
    for (&i, (url, _acked)) in sessions.iter() {
        let j = &jobs[i];
        let path = url.strip_prefix(&base).unwrap_or(url);
        let r = c.get(path).await;
        if r.status == 404 {
            assert_eq!(r.error_code(), "BLOB_UPLOAD_UNKNOWN");
            continue;
        }
        assert_eq!(r.status, 204, "upload status of push {i}: {:?}", r.body);
        let from = match r.header("range") {
            Some(range) => range.trim_start_matches("0-").parse::<usize>().unwrap() + 1,
            None => 0,
        };
        let r = c
            .req(
                Method::PUT,
                &with_query(path, &format!("digest={}", j.layer_digest)),
                &[("content-type", "application/octet-stream")],
                Some(j.layer[from..].to_vec()),
            )
            .await;
        assert_eq!(r.status, 201, "resume push {i} at {from}: {:?}", r.body);
        resumed += 1;
    }

    // The restarted server takes new pushes, including the ones the kill interrupted.
    for i in (0..PUSHES).filter(|i| !manifests[*i]) {
        let j = &jobs[i];
        c.push_blob(&j.repo, &j.layer).await;
        c.push_blob(&j.repo, &j.config).await;
        let r = c.push_manifest(&j.repo, &j.tag, OCI_MANIFEST, &j.manifest).await;
        assert_eq!(r.status, 201, "re-push {i}: {:?}", r.body);
        let r = c.get(&format!("/v2/{}/blobs/{}", j.repo, j.layer_digest)).await;
        assert_eq!(r.body, j.layer);
    }
    let on_disk = assert_committed_blobs_hash_to_their_names(&data);
    assert!(on_disk >= 2 * PUSHES, "every blob is committed: {on_disk} files");
    println!("resumed {resumed} sessions; re-pushed {in_flight}");
}
