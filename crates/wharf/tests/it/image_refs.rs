//! `wharf images scan|lock|rewrite` against a corpus written for the tests (tests/corpus/images: a multi-stage
//! Dockerfile with ARGs, a Helm-style multi-document stream with comments, a kind config, a Compose file) and
//! a real mirror: the golden scan, a lock resolved through Wharf's mirror, `--check` noticing an upstream
//! move, and rewrite round trips that change only reference text.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{wharf_bin, Server};
use crate::images::{multi_arch, PLATFORMS};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/images")
}

fn wharf(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(wharf_bin()).args(args).current_dir(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scan_matches_the_golden_output() {
    let (code, out, err) = wharf(&corpus(), &["images", "scan", "."]);
    assert_eq!(code, 0, "{err}");
    let golden = std::fs::read_to_string(corpus().join("scan.golden")).unwrap();
    assert_eq!(out, golden);
    assert!(
        err.contains("compose.yaml:8") && err.contains("skipped"),
        "the unresolved Compose variable is reported: {err}"
    );
    // --build-arg overrides an ARG default; stdin works and is recognised as a Dockerfile.
    let (_, out, _) = wharf(&corpus(), &["images", "scan", "--build-arg", "GO_VERSION=1.23", "build/Dockerfile"]);
    assert!(out.starts_with("docker.io/library/golang:1.23-bookworm\tbuild/Dockerfile:7\n"), "{out}");
    let mut child = Command::new(wharf_bin())
        .args(["images", "scan", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"FROM alpine:3.20 AS a\nFROM a\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "docker.io/library/alpine:3.20\t-:1\n");
}

#[tokio::test]
async fn lock_through_the_mirror_check_and_rewrite_round_trips() {
    let hub = Server::start();
    let demo = multi_arch(701, &PLATFORMS[..2], false, 2_000);
    demo.push(&hub.client(), "library/demo", "v1").await;
    let tool = multi_arch(702, &PLATFORMS[..1], false, 2_000);
    tool.push(&hub.client(), "org/tool", "2").await;
    let mirror =
        Server::start_config(&format!("[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ntag_ttl_secs = 0\n", hub.url));
    let hosted = multi_arch(703, &PLATFORMS[..1], false, 2_000);
    hosted.push(&mirror.client(), "team/app", "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deploy = format!(
        "# deployment\napiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        \
         - name: demo\n          image: demo:v1   # from Docker Hub\n        - name: app\n          image: \"{}/team/app:1.0\"\n",
        mirror.addr
    );
    std::fs::write(d.join("deploy.yaml"), &deploy).unwrap();
    std::fs::write(
        d.join("Dockerfile"),
        "ARG BASE=org/tool:2\nFROM $BASE AS base\nFROM docker.io/org/tool:2\nCOPY --from=base /a /b\n",
    )
    .unwrap();
    let server = mirror.url.clone();
    let addr = mirror.addr.clone();
    let (demo_d, tool_d, hosted_d) =
        (demo.index.digest.to_string(), tool.index.digest.to_string(), hosted.index.digest.to_string());
    let (p0, p1) = (demo.manifests[0].digest.to_string(), demo.manifests[1].digest.to_string());
    let d2 = d.to_owned();
    tokio::task::spawn_blocking(move || {
        let d = d2.as_path();
        let (code, out, err) = wharf(d, &["images", "lock", "--server", &server, "."]);
        assert_eq!(code, 0, "{out}{err}");
        let lock: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("wharf.lock")).unwrap()).unwrap();
        let images = &lock["images"];
        assert_eq!(images["docker.io/library/demo:v1"]["digest"], demo_d.as_str());
        assert_eq!(images["docker.io/library/demo:v1"]["platforms"]["linux/amd64"], p0.as_str());
        assert_eq!(images["docker.io/library/demo:v1"]["platforms"].as_object().unwrap().len(), 2, "{p1}");
        assert_eq!(images["docker.io/org/tool:2"]["digest"], tool_d.as_str());
        assert_eq!(images["docker.io/org/tool:2"]["sources"].as_array().unwrap().len(), 2, "both Dockerfile lines");
        assert_eq!(images[&format!("{addr}/team/app:1.0")]["digest"], hosted_d.as_str());
        let (code, out, _) = wharf(d, &["images", "lock", "--server", &server, "--check", "."]);
        assert_eq!(code, 0, "{out}");

        // Rewrite to the mirror's name and pin; twice is the same as once; only reference text changed.
        let (code, _, err) = wharf(d, &["images", "rewrite", "--registry", &addr, "--pin", "."]);
        assert_eq!(code, 0, "{err}");
        let once = std::fs::read_to_string(d.join("deploy.yaml")).unwrap();
        let want = deploy
            .replace("demo:v1", &format!("{addr}/docker.io/library/demo:v1@{demo_d}"))
            .replace(&format!("{addr}/team/app:1.0"), &format!("{addr}/team/app:1.0@{hosted_d}"));
        assert_eq!(once, want);
        let docker = std::fs::read_to_string(d.join("Dockerfile")).unwrap();
        assert!(docker.starts_with("ARG BASE=org/tool:2\nFROM $BASE AS base\n"), "variables stay: {docker}");
        assert!(docker.contains(&format!("FROM {addr}/docker.io/org/tool:2@{tool_d}\n")), "{docker}");
        wharf(d, &["images", "rewrite", "--registry", &addr, "--pin", "."]);
        assert_eq!(std::fs::read_to_string(d.join("deploy.yaml")).unwrap(), once, "idempotent");
        // The rewritten files resolve to the same lock.
        let (code, out, _) = wharf(d, &["images", "lock", "--server", &server, "--check", "deploy.yaml"]);
        assert_eq!(code, 0, "{out}");
    })
    .await
    .unwrap();

    // The upstream moves demo:v1: the lock is stale.
    let moved = multi_arch(704, &PLATFORMS[..1], false, 2_000);
    moved.push(&hub.client(), "library/demo", "v1").await;
    std::fs::write(d.join("deploy.yaml"), "image: demo:v1\n").unwrap();
    let (code, out, _) = wharf(d, &["images", "lock", "--server", &mirror.url, "--check", "deploy.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("docker.io/library/demo:v1: locked at") && out.contains(&moved.index.digest.to_string()),
        "{out}"
    );
    std::fs::write(d.join("new.yaml"), "image: never-locked:1\n").unwrap();
    let (code, _, err) = wharf(d, &["images", "lock", "--server", &mirror.url, "--check", "new.yaml"]);
    assert_ne!(code, 0, "an unresolvable reference fails the check: {err}");
}

#[tokio::test]
async fn a_lock_file_drives_sync_at_the_locked_digests() {
    let hub = Server::start();
    let demo = multi_arch(711, &PLATFORMS[..2], false, 2_000);
    demo.push(&hub.client(), "library/demo", "v1").await;
    let upstream = format!("[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ntag_ttl_secs = 0\n", hub.url);
    let mirror = Server::start_config(&upstream);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    std::fs::write(d.join("pod.yaml"), format!("image: demo:v1\n---\nimage: demo@{}\n", demo.manifests[1].digest))
        .unwrap();
    std::fs::write(d.join("wharf.toml"), format!("{upstream}\n[[sync]]\nlock = \"wharf.lock\"\n")).unwrap();
    let server = mirror.url.clone();
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || {
        let (code, out, err) = wharf(&d2, &["images", "lock", "--server", &server, "pod.yaml"]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = wharf(&d2, &["--config", "wharf.toml", "config", "check"]);
        assert_eq!(code, 0, "the lock entry validates: {out}{err}");
    })
    .await
    .unwrap();
    // The upstream moves the tag after the lock was written.
    let moved = multi_arch(712, &PLATFORMS[..1], false, 2_000);
    moved.push(&hub.client(), "library/demo", "v1").await;
    for args in [
        vec!["--config", "wharf.toml", "--data-dir", "a", "sync", "--no-progress"],
        vec!["--config", "wharf.toml", "--data-dir", "b", "sync", "--no-progress", "--lock", "wharf.lock"],
    ] {
        let d2 = d.clone();
        let (code, out, err) = tokio::task::spawn_blocking(move || wharf(&d2, &args)).await.unwrap();
        assert_eq!(code, 0, "{out}{err}");
    }
    drop(hub);
    for data in ["a", "b"] {
        let s = Server::start_with(&d.join(data), &[]);
        let c = s.client();
        let r = c.get("/v2/docker.io/library/demo/manifests/v1").await;
        assert_eq!(r.status, 200, "{data}");
        assert_eq!(
            r.header("docker-content-digest").unwrap(),
            demo.index.digest.to_string(),
            "the locked digest, not the moved tag"
        );
        for m in &demo.manifests {
            assert_eq!(c.get(&format!("/v2/docker.io/library/demo/manifests/{}", m.digest)).await.status, 200);
        }
        for b in &demo.blobs {
            assert_eq!(c.get(&format!("/v2/docker.io/library/demo/blobs/{}", b.digest)).await.status, 200);
        }
    }
}
