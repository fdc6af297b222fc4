//! `kill -9` of `wharf gc` in the middle of its sweep: a store full of deleted images (so the sweep takes a
//! while), a collection killed once it has started deleting and before it has finished (retried with more
//! garbage when a run slips through), then a restarted `serve`, a collection to completion, and a check that
//! every tagged image still pulls whole, every byte served hashes to its digest, and the garbage is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci::Digest;
use reqwest::Method;
use serde_json::json;

use crate::common::{die_with_parent, wharf_bin, Client, Server};
use crate::images::{multi_arch, noise, Image, OCI_MANIFEST, PLATFORMS};

/// Repositories holding deleted images, and deleted images per repository per attempt.
const REPOS: usize = 16;
const DOOMED_PER_REPO: usize = 12;
const ATTEMPTS: u64 = 6;

fn blob_path(data: &Path, d: &Digest) -> PathBuf {
    data.join("blobs").join("sha256").join(&d.hex()[..2]).join(d.hex())
}

fn manifest_path(data: &Path, repo: &str, d: &Digest) -> PathBuf {
    data.join("repos").join(repo).join("_manifests").join("sha256").join(d.hex())
}

/// A deleted image: its repository, manifest and (config, layer) digests.
struct Doomed {
    repo: String,
    manifest: Digest,
    blobs: [Digest; 2],
}

/// Push a small single-platform image into `repo` by tag, then delete its manifest: garbage.
async fn push_doomed(c: &Client, repo: String, seed: u64, shared_layer: Option<&[u8]>) -> Doomed {
    let config = format!("{{\"doomed\":{seed}}}").into_bytes();
    let layer = shared_layer.map(<[u8]>::to_vec).unwrap_or_else(|| noise(seed, 2048 + (seed as usize % 512)));
    let (cd, ld) = (c.push_blob(&repo, &config).await, c.push_blob(&repo, &layer).await);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let md = Digest::sha256_of(&m);
    let r = c.push_manifest(&repo, &format!("d{seed}"), OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = c.req(Method::DELETE, &format!("/v2/{repo}/manifests/{md}"), &[], None).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    Doomed { repo, manifest: md, blobs: [cd, ld] }
}

/// Pull a tagged image whole, checking every digest; the first problem found, if any.
async fn pull_whole(c: &Client, repo: &str, img: &Image) -> Result<(), String> {
    img.pull_whole(c, repo, "v1").await
}

/// Start `wharf gc --grace 0s` and SIGKILL it once it has deleted some of `doomed` but not all of it. `true`
/// when the kill landed mid-sweep; `false` when the collection finished first (or never started deleting).
fn kill_mid_sweep(data: &Path, doomed: &[Doomed]) -> bool {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["gc", "--grace", "0s", "--data-dir"])
        .arg(data)
        .env_remove("WHARF_CONFIG")
        .env_remove("WHARF_DATA_DIR")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    // The first doomed manifest is in the repository swept first; the last doomed blob is swept last.
    let first = manifest_path(data, &doomed[0].repo, &doomed[0].manifest);
    let last_blobs: Vec<PathBuf> = doomed.iter().rev().take(8).map(|d| blob_path(data, &d.blobs[1])).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = !first.exists();
        let unfinished = last_blobs.iter().any(|p| p.exists());
        if started && unfinished {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[tokio::test]
async fn kill_9_during_a_gc_sweep_leaves_every_tagged_image_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &[]);
    let c = server.client();
    // Tagged images that must survive, in repositories that also hold garbage.
    let kept: Vec<(String, Image)> = (0..4u64)
        .map(|i| (format!("crash/r{:02}", i * 5), multi_arch(700 + i, &PLATFORMS[..2], false, 20_000)))
        .collect();
    for (repo, img) in &kept {
        img.push(&c, repo, "v1").await;
    }
    let shared = kept[0].1.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap().bytes.clone();

    let mut killed_in = None;
    let mut all_doomed: Vec<Doomed> = Vec::new();
    for attempt in 0..ATTEMPTS {
        // Garbage: deleted images in every repository (one of them reusing a kept image's layer).
        let jobs: Vec<(String, u64, bool)> = (0..REPOS)
            .flat_map(|r| (0..DOOMED_PER_REPO).map(move |k| (r, k)))
            .map(|(r, k)| {
                let seed = 10_000 * (attempt + 1) + (r * DOOMED_PER_REPO + k) as u64;
                (format!("crash/r{r:02}"), seed, r == 3 && k == 0)
            })
            .collect();
        let c2 = c.clone();
        let shared2 = shared.clone();
        let mut doomed: Vec<Doomed> = futures_util::stream::iter(jobs)
            .map(|(repo, seed, share)| {
                let c = c2.clone();
                let shared = shared2.clone();
                async move { push_doomed(&c, repo, seed, share.then_some(&shared[..])).await }
            })
            .buffered(8)
            .collect()
            .await;
        doomed.sort_by(|a, b| a.repo.cmp(&b.repo));
        let landed = kill_mid_sweep(&data, &doomed);
        all_doomed.extend(doomed);
        if landed {
            killed_in = Some(attempt);
            break;
        }
    }
    let attempt = killed_in.expect("no kill landed during a sweep");
    println!("gc killed mid-sweep at attempt {attempt}");

    // Restart the server on the same directory; collect to completion beside it.
    server.terminate();
    let server = Server::start_with(&data, &[]);
    let c = server.client();
    let out = Command::new(wharf_bin())
        .args(["gc", "--grace", "0s", "--data-dir"])
        .arg(&data)
        .env_remove("WHARF_CONFIG")
        .env_remove("WHARF_DATA_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("ERROR"), "{text}");

    // Nothing referenced is missing; every byte served hashes to its digest.
    for (repo, img) in &kept {
        pull_whole(&c, repo, img).await.unwrap_or_else(|e| panic!("after kill -9 and a new gc: {e}"));
    }
    assert!(blob_path(&data, &Digest::sha256_of(&shared)).exists(), "a kept layer another repository had too");
    // The garbage is gone: manifests, links and pool blobs (except what a kept image shares).
    let kept_blobs: std::collections::HashSet<Digest> =
        kept.iter().flat_map(|(_, i)| i.blobs.iter().map(|b| b.digest.clone())).collect();
    for d in &all_doomed {
        assert!(!manifest_path(&data, &d.repo, &d.manifest).exists(), "{} {}", d.repo, d.manifest);
        let r = c.get(&format!("/v2/{}/manifests/{}", d.repo, d.manifest)).await;
        assert_eq!(r.status, 404);
        for b in d.blobs.iter().filter(|b| !kept_blobs.contains(b)) {
            assert!(!blob_path(&data, b).exists(), "garbage blob {b} left in the pool");
        }
    }
    // And whatever remains on disk is sound.
    let out = Command::new(wharf_bin()).args(["scrub", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}
