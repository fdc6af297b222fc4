//! Garbage collection end to end: `wharf gc` beside a running server, `--dry-run`, `wharf gc status`,
//! `GET /_wharf/gc`, the `gc.lock`, and `[gc] every` inside `serve` while pushes run.

use std::time::Duration;

use oci::Digest;
use reqwest::Method;

use crate::common::{bytes_under, Client, Server};
use crate::images::{multi_arch, Image, PLATFORMS};

fn wharf(args: &[&str]) -> std::process::Output {
    crate::common::wharf_cli(args)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Pull `reference` and everything below it, checking every digest; false at the first thing missing.
async fn pulls_whole(c: &Client, repo: &str, reference: &str, image: &Image) -> bool {
    image.pull_whole(c, repo, reference).await.is_ok()
}

/// Delete an image's index and child manifests by digest.
async fn delete_image(c: &Client, repo: &str, image: &Image) {
    for m in std::iter::once(&image.index).chain(&image.manifests) {
        let r = c.req(Method::DELETE, &format!("/v2/{repo}/manifests/{}", m.digest), &[], None).await;
        assert_eq!(r.status, 202, "delete {}: {:?}", m.digest, r.body);
    }
}

#[tokio::test]
async fn wharf_gc_beside_a_running_server_frees_exactly_the_deleted_images_blobs() {
    let s = Server::start();
    let c = s.client();
    let data = s.data_dir.clone();
    let d = data.to_str().unwrap();
    let (a, b, kept) = (
        multi_arch(901, &PLATFORMS[..2], false, 64 * 1024),
        multi_arch(902, &PLATFORMS[..3], true, 48 * 1024),
        multi_arch(903, &PLATFORMS[..2], false, 32 * 1024),
    );
    a.push(&c, "team/a", "v1").await;
    a.push(&c, "team/a-copy", "v1").await; // the same blobs in a second repository
    b.push(&c, "team/b", "v1").await;
    kept.push(&c, "team/kept", "v1").await;
    delete_image(&c, "team/a", &a).await;
    delete_image(&c, "team/b", &b).await;
    let blobs_dir = data.join("blobs");
    let before = bytes_under(&blobs_dir);
    let b_unique: u64 = b.blobs.iter().map(|x| x.bytes.len() as u64).sum();

    // A dry run changes nothing and says what would go.
    let out = wharf(&["gc", "--grace", "0s", "--dry-run", "--data-dir", d]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("DRY RUN") && stdout(&out).contains("would delete"), "{}", stdout(&out));
    assert_eq!(bytes_under(&blobs_dir), before, "a dry run deletes nothing");
    let status = wharf(&["gc", "status", "--json", "--data-dir", d]);
    let dry: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(dry["last"]["dry_run"], true);
    assert_eq!(dry["last"]["bytes_freed"], b_unique, "{dry}");

    let out = wharf(&["gc", "--grace", "0s", "--data-dir", d]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let after = bytes_under(&blobs_dir);
    assert_eq!(before - after, b_unique, "exactly the deleted image's unique blobs are freed");
    for (repo, image) in [("team/a-copy", &a), ("team/kept", &kept)] {
        assert!(pulls_whole(&c, repo, "v1", image).await, "{repo} pulls whole after gc");
    }
    for x in &b.blobs {
        assert_eq!(c.get(&format!("/v2/team/b/blobs/{}", x.digest)).await.status, 404);
    }

    // The report: `wharf gc status` and the server's status route agree.
    let status = wharf(&["gc", "status", "--data-dir", d]);
    assert!(status.status.success());
    let text = stdout(&status);
    assert!(text.contains(&format!("{} pool blobs ({b_unique} bytes)", b.blobs.len())), "{text}");
    assert!(text.contains("team/b"), "{text}");
    let r = c.get("/_wharf/gc").await;
    assert_eq!(r.status, 200);
    let last = &r.json()["last"];
    assert_eq!(last["dry_run"], false);
    assert_eq!(last["blobs_deleted"], b.blobs.len());
    assert_eq!(last["bytes_freed"], b_unique);
    assert_eq!(last["manifests_deleted"], 0, "the deleted manifests were gone already");
    assert_eq!(last["links_deleted"], (a.blobs.len() + b.blobs.len()) as u64);

    // A second collection while one holds gc.lock fails and says why.
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(data.join("gc.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let out = wharf(&["gc", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another garbage collection is running") && err.contains("gc.lock"), "{err}");
    drop(lock);
    assert!(wharf(&["gc", "--data-dir", d]).status.success(), "the lock is free again");
}

/// Push children first, then the index under `tag`, starting over when the collector took something the push
/// had uploaded but not yet referenced (grace 0). Returns the number of attempts.
async fn push_until_accepted(c: &Client, repo: &str, tag: &str, image: &Image) -> usize {
    'attempt: for attempt in 1..=100 {
        for b in &image.blobs {
            c.push_blob(repo, &b.bytes).await;
        }
        for m in &image.manifests {
            if c.push_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes).await.status != 201 {
                continue 'attempt;
            }
        }
        let r = c.push_manifest(repo, tag, &image.index.media_type, &image.index.bytes).await;
        if r.status == 201 {
            return attempt;
        }
        assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN", "only a collected child may refuse the push");
    }
    panic!("{repo}:{tag} was never accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_gc_every_second_with_no_grace_loses_no_pushed_image() {
    let s = Server::start_config("[gc]\nevery = \"1s\"\ngrace = \"0s\"\n");
    let c = s.client();
    let mut tasks = Vec::new();
    for i in 0..25u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let repo = format!("load/p{}", i % 7); // several pushers share repositories
            let mut pushed = Vec::new();
            let mut junk_blobs = Vec::new();
            let mut attempts = 0;
            for round in 0..4u64 {
                let seed = 10_000 + i * 10 + round;
                let image = multi_arch(seed, &PLATFORMS[..2], false, 8 * 1024);
                let tag = format!("i{i}-r{round}");
                attempts += push_until_accepted(&c, &repo, &tag, &image).await;
                // Garbage for the collector: an untagged manifest of a fresh image, then nothing refers to it.
                let junk = multi_arch(seed + 5_000_000, &PLATFORMS[..1], false, 4 * 1024);
                for b in &junk.blobs {
                    c.push_blob(&repo, &b.bytes).await;
                }
                let m = &junk.manifests[0];
                c.push_manifest(&repo, &m.digest.to_string(), &m.media_type, &m.bytes).await;
                junk_blobs.extend(junk.blobs.iter().map(|b| b.digest.clone()));
                pushed.push((repo.clone(), tag, image));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (pushed, junk_blobs, attempts)
        }));
    }
    let (mut all, mut junk, mut attempts) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (pushed, j, n) = t.await.unwrap();
        all.extend(pushed);
        junk.extend(j);
        attempts += n;
    }
    println!("{} images accepted after {attempts} push attempts", all.len());
    // Let a few more collections run over the finished pushes.
    let runs = s.metric("wharf_gc_runs_total", &[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.metric("wharf_gc_runs_total", &[]).await < runs + 2 {
        assert!(std::time::Instant::now() < deadline, "the scheduled collection stopped running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut lost = Vec::new();
    for (repo, tag, image) in &all {
        if !pulls_whole(&c, repo, tag, image).await {
            lost.push(format!("{repo}:{tag}"));
        }
    }
    assert_eq!(all.len(), 100);
    assert!(lost.is_empty(), "images lost under gc: {lost:?}");
    // What the deleted (never tagged) images left is gone: the pool holds exactly the live images' blobs.
    let live: std::collections::HashMap<Digest, u64> = all
        .iter()
        .flat_map(|(_, _, image)| image.blobs.iter().map(|b| (b.digest.clone(), b.bytes.len() as u64)))
        .collect();
    let pool = s.data_dir.join("blobs");
    for d in junk.iter().filter(|d| !live.contains_key(*d)) {
        let path = pool.join("sha256").join(&d.hex()[..2]).join(d.hex());
        assert!(!path.exists(), "garbage blob {d} is still on disk");
    }
    assert_eq!(bytes_under(&pool), live.values().sum::<u64>(), "bytes on disk = the live images' distinct blobs");
    assert!(s.metric("wharf_gc_manifests_deleted_total", &[]).await > 0, "the collector did collect");
    assert!(s.metric("wharf_gc_bytes_freed_total", &[]).await > 0);
    let r = c.get("/_wharf/gc").await;
    assert_eq!(r.json()["last"]["errors"], serde_json::json!([]));
    println!(
        "{} collections; freed {} manifests, {} bytes; last took {} ms",
        s.metric("wharf_gc_runs_total", &[]).await,
        s.metric("wharf_gc_manifests_deleted_total", &[]).await,
        s.metric("wharf_gc_bytes_freed_total", &[]).await,
        r.json()["last"]["duration_ms"]
    );
}

/// The v1.1.1 conformance suite passes with a collection every second (grace 30 s: the suite uploads blobs
/// before the manifests that reference them, as every client does).
#[test]
fn v1_1_1_suite_passes_with_gc_every_second() {
    let s = Server::start_config("[gc]\nevery = \"1s\"\ngrace = \"30s\"\n");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let runs = || rt.block_on(s.metric("wharf_gc_runs_total", &[]));
    // One pass takes well under a second: repeat it until several collections ran while it did (by time, not
    // by a pass count: on a loaded machine a collection takes longer and the passes may not).
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut pass = 0;
    while std::time::Instant::now() < deadline {
        crate::conformance::assert_conforms_at(crate::conformance::Suite::V111, &s.addr, None, "gc every 1s");
        pass += 1;
        if runs() >= 3 {
            println!("{pass} passes, {} collections", runs());
            break;
        }
    }
    assert!(runs() >= 3, "the scheduled collection ran during the suites");
    let r = rt.block_on(s.client().get("/_wharf/gc"));
    assert_eq!(r.json()["last"]["errors"], serde_json::json!([]));
}
