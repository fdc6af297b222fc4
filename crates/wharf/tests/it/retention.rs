//! Retention rules end to end: `[[retention]]` with `keep_last`, `keep_within` (pushes and pulls),
//! `keep_tags`, an immutable `[[tags]]` rule that outranks them, `untagged_after`, `wharf gc --dry-run`
//! listing what would go, and the collection freeing the removed images' blobs.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;

use crate::common::{Client, Server};
use crate::images::{multi_arch, Image, PLATFORMS};

const CONFIG: &str = r#"
[[tags]]
repositories = ["team/*"]
tags = ["1.0"]
immutable = true

[[retention]]
repositories = ["team/keep-untagged"]
untagged_after = "1h"

[[retention]]
repositories = ["team/*"]
keep_last = 1
keep_within = "4s"
keep_tags = ["stable"]
"#;

fn wharf(args: &[&str]) -> std::process::Output {
    crate::common::wharf_cli(args)
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn image(seed: u64) -> Image {
    multi_arch(seed, &PLATFORMS[..2], false, 8 * 1024)
}

async fn status(c: &Client, repo: &str, reference: &str) -> u16 {
    let accept = [("accept", "application/vnd.oci.image.index.v1+json")];
    c.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"), &accept, None).await.status.as_u16()
}

fn gc(data: &Path, cfg: &Path, dry_run: bool) -> String {
    let (d, c) = (data.to_str().unwrap(), cfg.to_str().unwrap());
    let mut args = vec!["gc", "--grace", "0s", "--data-dir", d, "--config", c];
    if dry_run {
        args.push("--dry-run");
    }
    let out = wharf(&args);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[tokio::test]
async fn retention_removes_what_no_rule_keeps_and_gc_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cfg) = (dir.path().join("data"), dir.path().join("wharf.toml"));
    std::fs::write(&cfg, CONFIG).unwrap();
    let s = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let c = s.client();
    let imgs: Vec<Image> = (0..7).map(|i| image(7100 + i)).collect();
    // Old content: the immutable 1.0, the kept-by-pattern stable, and three plain tags.
    imgs[0].push(&c, "team/app", "1.0").await;
    imgs[1].push(&c, "team/app", "stable").await;
    imgs[2].push(&c, "team/app", "old-a").await;
    imgs[3].push(&c, "team/app", "old-pulled").await;
    imgs[4].push(&c, "team/app", "old-b").await;
    imgs[4].push(&c, "other/app", "old").await; // no rule covers other/*
                                                // An untagged manifest where untagged_after keeps it, and one where the grace (0s) lets it go.
    imgs[5].push(&c, "team/keep-untagged", "tmp").await;
    imgs[5].push(&c, "other/app", "tmp").await;
    for repo in ["team/keep-untagged", "other/app"] {
        let r = c.req(Method::DELETE, &format!("/v2/{repo}/manifests/tmp"), &[], None).await;
        assert_eq!(r.status, 202, "untag {repo}");
    }
    tokio::time::sleep(Duration::from_millis(5200)).await; // everything so far is older than keep_within
    imgs[6].push(&c, "team/app", "newest").await; // kept by keep_last = 1 (and keep_within)
    assert_eq!(status(&c, "team/app", "old-pulled").await, 200); // a pull keeps it (keep_within)
                                                                 // The server writes noted pull times on shutdown (and every few seconds).
    assert!(s.terminate().success());

    let dry = gc(&data, &cfg, true);
    assert!(dry.contains("retention would remove 2 tags"), "{dry}");
    assert!(dry.contains("team/app:old-a") && dry.contains("team/app:old-b"), "{dry}");
    assert!(dry.contains("retention[1]: matches no keep_tags, not among the newest 1"), "{dry}");
    for kept in ["team/app:1.0", "team/app:stable", "team/app:old-pulled", "team/app:newest", "other/app"] {
        assert!(!dry.contains(&format!("{kept} (")), "{kept} is kept: {dry}");
    }

    let blob_path = |d: &oci::Digest| data.join("blobs").join("sha256").join(&d.hex()[..2]).join(d.hex());
    let old_a_layer = &imgs[2].blobs.last().unwrap().digest;
    assert!(blob_path(old_a_layer).exists(), "a dry run deletes nothing: {}", blob_path(old_a_layer).display());
    let real = gc(&data, &cfg, false);
    assert!(real.contains("retention removed 2 tags"), "{real}");
    assert!(!blob_path(old_a_layer).exists(), "the removed tag's layers are freed");

    let s = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let c = s.client();
    for (repo, tag, want) in [
        ("team/app", "1.0", 200),
        ("team/app", "stable", 200),
        ("team/app", "old-pulled", 200),
        ("team/app", "newest", 200),
        ("team/app", "old-a", 404),
        ("team/app", "old-b", 404),
        ("other/app", "old", 200),
    ] {
        assert_eq!(status(&c, repo, tag).await, want, "{repo}:{tag}");
    }
    // old-b's image is still referenced by other/app:old; old-a's is gone.
    assert_eq!(status(&c, "team/app", &imgs[2].index.digest.to_string()).await, 404);
    assert_eq!(status(&c, "other/app", &imgs[4].index.digest.to_string()).await, 200);
    // untagged_after keeps the untagged manifest in team/keep-untagged; with no rule, grace 0 lets it go.
    assert_eq!(status(&c, "team/keep-untagged", &imgs[5].index.digest.to_string()).await, 200);
    assert_eq!(status(&c, "other/app", &imgs[5].index.digest.to_string()).await, 404);

    // The history says who removed the tag, and the report lists it.
    let h = c.get("/_wharf/history/team/app/old-a").await.json();
    let last = h["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["deleted"], true, "{h}");
    assert_eq!(last["source"], "retention:retention[1]", "{h}");
    let report = c.get("/_wharf/gc").await.json();
    assert_eq!(report["last"]["tags_removed_count"], 2, "{report}");
    let removed: Vec<&str> =
        report["last"]["tags_removed"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(removed.len(), 2, "{report}");
    assert!(removed.contains(&"old-a") && removed.contains(&"old-b"), "{report}");
}

#[test]
fn config_errors_name_the_retention_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "[[retention]]\nrepositories = [\"team/*\"]\nkeep_within = \"a while\"\n").unwrap();
    let data = dir.path().join("data");
    let out = wharf(&["gc", "--data-dir", data.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("retention[0].keep_within") && t.contains("wharf.toml"), "{t}");
}
