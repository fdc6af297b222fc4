//! Scrub end to end: bit rot in a mirror's cache is found by `wharf scrub`, moved to quarantine, and repaired
//! from the upstream at the next pull; a clean store exits 0; `[scrub] every` inside `serve` finds a flipped
//! byte and `GET /_wharf/scrub` shows it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci::Digest;
use reqwest::Method;

use crate::common::Server;
use crate::images::{multi_arch, Image, OCI_INDEX, PLATFORMS};

fn wharf(args: &[&str]) -> std::process::Output {
    crate::common::wharf_cli(args)
}

fn blob_path(data: &Path, d: &Digest) -> PathBuf {
    data.join("blobs").join("sha256").join(&d.hex()[..2]).join(d.hex())
}

fn manifest_path(data: &Path, repo: &str, d: &Digest) -> PathBuf {
    data.join("repos").join(repo).join("_manifests").join("sha256").join(d.hex())
}

/// Flip one bit near the end of a file (inside the manifest JSON, past the media type line).
fn flip(p: &Path) {
    let mut b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let at = b.len() - 2;
    b[at] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Wait (bounded) until a file exists.
async fn wait_for(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pull the whole image through `s` under `repo`, checking every byte.
async fn pull(s: &Server, repo: &str, img: &Image) {
    let c = s.client();
    let r = c.req(Method::GET, &format!("/v2/{repo}/manifests/v1"), &[("accept", OCI_INDEX)], None).await;
    assert_eq!(r.status, 200, "{repo}: {:?}", r.body);
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    for m in &img.manifests {
        let r = c.get(&format!("/v2/{repo}/manifests/{}", m.digest)).await;
        assert_eq!(r.status, 200, "manifest {}", m.digest);
        assert_eq!(&r.body[..], &m.bytes[..], "manifest {}", m.digest);
    }
    for b in &img.blobs {
        let r = c.get(&format!("/v2/{repo}/blobs/{}", b.digest)).await;
        assert_eq!(r.status, 200, "blob {}", b.digest);
        assert_eq!(Digest::sha256_of(&r.body), b.digest, "blob bytes");
    }
}

#[tokio::test]
async fn a_rotten_mirror_cache_is_quarantined_and_repaired_from_the_upstream() {
    let hub = Server::start();
    let img = multi_arch(71, &PLATFORMS[..2], false, 120_000);
    img.push(&hub.client(), "library/demo", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, format!("[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n", hub.url)).unwrap();
    let mirror = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let repo = "docker.io/library/demo";
    pull(&mirror, repo, &img).await;
    let fetched = hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await;

    // Bit rot: one byte of the biggest cached layer and of a cached platform manifest.
    let layer = img.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap();
    let manifest = &img.manifests[0];
    flip(&blob_path(&data, &layer.digest));
    flip(&manifest_path(&data, repo, &manifest.digest));

    // A scrub beside the running server finds both, once each.
    let out = wharf(&["scrub", "--data-dir", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("CORRUPT blob {}", layer.digest)), "{stdout}");
    assert!(stdout.contains(&format!("CORRUPT manifest {repo}@{}", manifest.digest)), "{stdout}");
    assert!(stdout.contains("2 corrupt"), "{stdout}");
    assert!(!blob_path(&data, &layer.digest).exists() && !manifest_path(&data, repo, &manifest.digest).exists());
    let quarantined = files_under(&data.join("quarantine"));
    let names: Vec<String> = quarantined.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(quarantined.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.contains("/blobs/") && n.ends_with(&format!("sha256-{}", layer.digest.hex()))));
    assert!(names.iter().any(|n| n.contains(repo) && n.ends_with(&format!("sha256-{}", manifest.digest.hex()))));
    // The bad bytes are kept as they were, for inspection.
    let kept = quarantined.iter().find(|p| p.to_string_lossy().contains("/blobs/")).unwrap();
    assert_ne!(Digest::sha256_of(&std::fs::read(kept).unwrap()), layer.digest);

    // The report is kept: `wharf scrub status` and GET /_wharf/scrub.
    let status = wharf(&["scrub", "--data-dir", data.to_str().unwrap(), "status", "--json"]);
    assert_eq!(status.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["last"]["corrupt_found"], 2);
    let api = mirror.client().get("/_wharf/scrub").await.json();
    assert_eq!(api["last"], v["last"]);

    // The next pull through the mirror fetches good copies from the upstream.
    pull(&mirror, repo, &img).await;
    assert_eq!(hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await, fetched + 1, "one refetch");
    // The fill moves the verified bytes into the store right after the client's stream ends.
    let stored = blob_path(&data, &layer.digest);
    let link = data.join("repos").join(repo).join("_blobs/sha256").join(layer.digest.hex());
    wait_for(&stored).await;
    wait_for(&link).await;
    assert_eq!(Digest::sha256_of(&std::fs::read(&stored).unwrap()), layer.digest);

    // Pool bytes gone under a link that stays (a crash, an operator's rm), and a tagged manifest file gone:
    // the mirror treats both as misses and fetches them again, never a 404.
    std::fs::remove_file(blob_path(&data, &layer.digest)).unwrap();
    std::fs::remove_file(manifest_path(&data, repo, &img.index.digest)).unwrap();
    assert!(link.exists());
    pull(&mirror, repo, &img).await;
    assert_eq!(hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await, fetched + 2);
    wait_for(&stored).await;

    // And the store is clean again.
    let out = wharf(&["scrub", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 corrupt"));
}

#[tokio::test]
async fn a_clean_store_exits_zero_and_bad_flags_two() {
    let s = Server::start();
    let img = multi_arch(72, &PLATFORMS[..1], false, 5_000);
    img.push(&s.client(), "team/app", "v1").await;
    let data = s.data_dir.clone();
    let out = wharf(&["scrub", "--data-dir", data.to_str().unwrap(), "--rate", "1GiB"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let objects = img.blobs.len() + img.manifests.len() + 1;
    assert!(stdout.contains(&format!("checked {objects} objects")), "{stdout}");
    assert!(!data.join("quarantine").exists());
    let out = wharf(&["scrub", "--data-dir", data.to_str().unwrap(), "--rate", "fast"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
    let empty = tempfile::tempdir().unwrap();
    let out = wharf(&["scrub", "--data-dir", empty.path().to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no scrub has run yet"));
}

#[tokio::test]
async fn the_scrub_inside_serve_finds_a_flipped_byte() {
    let s = Server::start_config("[scrub]\nevery = \"1s\"\nrate = \"100MiB\"\n");
    let img = multi_arch(73, &PLATFORMS[..1], false, 50_000);
    img.push(&s.client(), "team/app", "v1").await;
    let layer = img.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap();
    flip(&blob_path(&s.data_dir, &layer.digest));
    let c = s.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let v = c.get("/_wharf/scrub").await.json();
        if v["last"]["corrupt_found"].as_u64().unwrap_or(0) > 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "no scrub found the flipped byte: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bad = &report["last"]["corrupt"][0];
    assert_eq!(bad["kind"], "blob");
    assert_eq!(bad["digest"], layer.digest.to_string());
    assert_eq!(bad["unlinked_from"][0], "team/app");
    assert!(s.metric("wharf_scrub_corrupt_found_total", &[]).await >= 1);
    assert!(s.metric("wharf_scrub_objects_checked_total", &[]).await >= 3);
    // A hosted repository has lost the blob: a 404, not corrupt bytes; a pusher's HEAD asks for it again.
    let r = c.get(&format!("/v2/team/app/blobs/{}", layer.digest)).await;
    assert_eq!(r.status, 404);
    let r = c.req(Method::HEAD, &format!("/v2/team/app/blobs/{}", layer.digest), &[], None).await;
    assert_eq!(r.status, 404);
}
