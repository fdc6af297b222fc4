//! `[[tags]]` rules, compare-and-swap tag writes and the tag history against the real binary: immutable tags
//! refuse moves and deletes (also from crane), `If-Match` / `If-None-Match` give 412, two racing writers give
//! one winner and one history event, required platforms refuse or report, `wharf tag` moves tags beside a
//! running server, and the conformance suite passes with rules on other repositories.

use std::process::Command;

use reqwest::{Method, StatusCode};

use crate::common::{wharf_bin, Client, Resp, Server};
use crate::images::{multi_arch, Image, PLATFORMS};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn rules(extra: &str) -> String {
    format!(
        "[[tags]]\nrepositories = [\"prod/*\"]\ntags = [\"v*\"]\nexclude = [\"v0.*\"]\nimmutable = true\n\n\
         [[tags]]\nrepositories = [\"multi/*\"]\nrequired_platforms = [\"linux/amd64\", \"linux/arm64\"]\n\n\
         [[tags]]\nrepositories = [\"soft/*\"]\nrequired_platforms = [\"linux/s390x\"]\nenforce_platforms = false\n{extra}"
    )
}

/// Push an image's blobs and children, not its index.
async fn push_parts(c: &Client, repo: &str, img: &Image) {
    for b in &img.blobs {
        c.push_blob(repo, &b.bytes).await;
    }
    for m in &img.manifests {
        assert_eq!(c.push_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes).await.status, 201);
    }
}

async fn put_index(c: &Client, repo: &str, tag: &str, img: &Image, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", INDEX)];
    h.extend_from_slice(headers);
    c.req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), &h, Some(img.index.bytes.clone())).await
}

fn assert_code(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), code, "{what}");
}

#[tokio::test]
async fn immutable_tags_refuse_moves_and_deletes() {
    let s = Server::start_config(&rules(""));
    let c = s.client();
    let (a, b) = (multi_arch(801, &PLATFORMS[..1], false, 500), multi_arch(802, &PLATFORMS[..1], false, 500));
    push_parts(&c, "prod/app", &a).await;
    push_parts(&c, "prod/app", &b).await;
    assert_eq!(put_index(&c, "prod/app", "v1", &a, &[]).await.status, 201);
    assert_eq!(put_index(&c, "prod/app", "v1", &a, &[]).await.status, 201, "re-pushing the same digest is fine");
    let r = put_index(&c, "prod/app", "v1", &b, &[]).await;
    assert_code(&r, 403, "DENIED", "moving an immutable tag");
    let msg = String::from_utf8_lossy(&r.body);
    assert!(msg.contains("tags[0]") && msg.contains("immutable"), "{msg}");
    assert_eq!(
        c.get("/v2/prod/app/manifests/v1").await.header("docker-content-digest").unwrap(),
        a.index.digest.to_string()
    );
    assert_code(&c.req(Method::DELETE, "/v2/prod/app/manifests/v1", &[], None).await, 403, "DENIED", "deleting it");
    let by_digest = format!("/v2/prod/app/manifests/{}", a.index.digest);
    assert_code(&c.req(Method::DELETE, &by_digest, &[], None).await, 403, "DENIED", "deleting its manifest");
    // Not covered: excluded tags, other tags, other repositories.
    for (repo, tag) in [("prod/app", "v0.9"), ("prod/app", "latest"), ("dev/app", "v1")] {
        if repo == "dev/app" {
            push_parts(&c, repo, &a).await;
            push_parts(&c, repo, &b).await;
        }
        assert_eq!(put_index(&c, repo, tag, &a, &[]).await.status, 201);
        assert_eq!(put_index(&c, repo, tag, &b, &[]).await.status, 201, "{repo}:{tag} moves");
    }
    // crane cannot move it either.
    let Some(clients) = crate::common::shared_path("clients") else { return };
    let addr = s.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(clients.join("crane"))
            .args(["--insecure", "copy", &format!("{addr}/dev/app:v1"), &format!("{addr}/prod/app:v1")])
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("DENIED"), "crane moving an immutable tag: {err}");
}

#[tokio::test]
async fn compare_and_swap_has_one_winner_and_one_history_event() {
    let s = Server::start();
    let c = s.client();
    let imgs: Vec<Image> = (0..3).map(|i| multi_arch(810 + i, &PLATFORMS[..1], false, 300)).collect();
    for img in &imgs {
        push_parts(&c, "team/app", img).await;
    }
    let (a, b, x) = (&imgs[0], &imgs[1], &imgs[2]);
    assert_eq!(put_index(&c, "team/app", "v1", a, &[("if-none-match", "*")]).await.status, 201, "create");
    assert_code(&put_index(&c, "team/app", "v1", b, &[("if-none-match", "*")]).await, 412, "DENIED", "create again");
    let wrong = format!("\"{}\"", b.index.digest);
    assert_code(&put_index(&c, "team/app", "v1", b, &[("if-match", &wrong)]).await, 412, "DENIED", "stale If-Match");
    // Two writers race from the same expected digest: exactly one wins.
    let expect = format!("\"{}\"", a.index.digest);
    let cond = [("if-match", expect.as_str())];
    let (r1, r2) = tokio::join!(put_index(&c, "team/app", "v1", b, &cond), put_index(&c, "team/app", "v1", x, &cond));
    let mut statuses = [r1.status.as_u16(), r2.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 412]);
    let winner = if r1.status == 201 { b } else { x };
    assert_eq!(
        c.get("/v2/team/app/manifests/v1").await.header("docker-content-digest").unwrap(),
        winner.index.digest.to_string()
    );
    let h = c.get("/_wharf/history/team/app/v1").await.json();
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "created, then exactly one move: {h}");
    assert_eq!(events[1]["old"], a.index.digest.to_string());
    assert_eq!(events[1]["new"], winner.index.digest.to_string());
    assert_eq!(events[1]["source"], "push");
    // Tag deletes honour If-Match too, and are recorded.
    let r = c.req(Method::DELETE, "/v2/team/app/manifests/v1", &[("if-match", &expect)], None).await;
    assert_code(&r, 412, "DENIED", "delete with a stale If-Match");
    let cur = format!("\"{}\"", winner.index.digest);
    assert_eq!(c.req(Method::DELETE, "/v2/team/app/manifests/v1", &[("if-match", &cur)], None).await.status, 202);
    let all = c.get("/_wharf/history/team/app").await.json();
    assert_eq!(all["tags"]["v1"].as_array().unwrap().last().unwrap()["deleted"], true, "{all}");
    assert_eq!(
        c.req(Method::PUT, "/v2/team/app/manifests/v2", &[("if-match", "nonsense")], Some(vec![])).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn required_platforms_refuse_or_report() {
    let s = Server::start_config(&rules(""));
    let c = s.client();
    let amd_only = multi_arch(820, &PLATFORMS[..1], false, 300);
    let both = multi_arch(821, &PLATFORMS[..2], false, 300);
    push_parts(&c, "multi/app", &amd_only).await;
    push_parts(&c, "multi/app", &both).await;
    let r = put_index(&c, "multi/app", "1.0", &amd_only, &[]).await;
    assert_code(&r, 403, "DENIED", "an index lacking arm64");
    let msg = String::from_utf8_lossy(&r.body);
    assert!(msg.contains("linux/arm64") && msg.contains("tags[1]"), "{msg}");
    assert_eq!(c.get("/v2/multi/app/manifests/1.0").await.status, 404, "nothing was tagged");
    assert_eq!(put_index(&c, "multi/app", "1.0", &both, &[]).await.status, 201);
    // A single-platform image manifest is checked by its config.
    let m = &amd_only.manifests[0];
    let r = c.push_manifest("multi/app", "single", &m.media_type, &m.bytes).await;
    assert_code(&r, 403, "DENIED", "an amd64 image manifest");
    // Report-only: the push goes through and the history says what was missing.
    push_parts(&c, "soft/app", &amd_only).await;
    assert_eq!(put_index(&c, "soft/app", "1.0", &amd_only, &[]).await.status, 201);
    let h = c.get("/_wharf/history/soft/app/1.0").await.json();
    assert!(h["events"][0]["source"].as_str().unwrap().contains("missing linux/s390x"), "{h}");
}

#[tokio::test]
async fn wharf_tag_commands_move_tags_beside_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, rules("")).unwrap();
    let data = dir.path().join("data");
    let s = Server::start_env(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let c = s.client();
    let imgs: Vec<Image> = (0..2).map(|i| multi_arch(830 + i, &PLATFORMS[..1], false, 300)).collect();
    for img in &imgs {
        push_parts(&c, "prod/app", img).await;
    }
    assert_eq!(put_index(&c, "prod/app", "v1.29.3", &imgs[0], &[]).await.status, 201);
    assert_eq!(put_index(&c, "prod/app", "v1.29.4", &imgs[1], &[]).await.status, 201);
    let tag = |args: &[&str]| {
        let out = Command::new(wharf_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .arg("tag")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (d0, d1) = (imgs[0].index.digest.to_string(), imgs[1].index.digest.to_string());
    // A moving alias over immutable versions (the alias itself is `latest`-like: not v*).
    assert!(tag(&["alias", "prod/app:stable", "prod/app:v1.29.3"]).0);
    assert_eq!(c.get("/v2/prod/app/manifests/stable").await.header("docker-content-digest").unwrap(), d0);
    assert!(tag(&["alias", "prod/app:stable", "prod/app:v1.29.4"]).0);
    let (ok, out) = tag(&["set", "prod/app:stable", &d0, "--expect", &d0]);
    assert!(!ok && out.contains("If-Match"), "stale --expect: {out}");
    let (ok, out) = tag(&["set", "prod/app:v1.29.3", &d1]);
    assert!(!ok && out.contains("immutable"), "immutable via the CLI too: {out}");
    assert!(tag(&["rollback", "prod/app:stable"]).0);
    assert_eq!(c.get("/v2/prod/app/manifests/stable").await.header("docker-content-digest").unwrap(), d0);
    let (ok, out) = tag(&["history", "prod/app:stable"]);
    assert!(ok && out.matches("alias:").count() == 2 && out.contains("rollback:"), "{out}");
    let (ok, out) = tag(&["history", "prod/app", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tags"].as_object().unwrap().len(), 3, "{v}");
}

#[test]
fn conformance_passes_with_rules_on_other_repositories() {
    let s = Server::start_config(&rules(
        "\n[[tags]]\nrepositories = [\"conformance-frozen/*\"]\nimmutable = true\nrequired_platforms = [\"linux/amd64\"]\n",
    ));
    crate::conformance::assert_conforms(crate::conformance::Suite::V111, &s, "with [[tags]] rules");
    crate::conformance::assert_conforms(crate::conformance::Suite::Main, &s, "with [[tags]] rules");
}

#[tokio::test]
async fn sync_reports_an_upstream_image_lacking_a_required_platform() {
    let hub = Server::start();
    let amd_only = multi_arch(840, &PLATFORMS[..1], false, 300);
    amd_only.push(&hub.client(), "library/demo", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"library/demo\"\n\
             tags = [\"v1\"]\n\n[[tags]]\nrepositories = [\"docker.io/*\"]\nrequired_platforms = [\"linux/amd64\", \"linux/arm64\"]\n",
            hub.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (cfg2, data2) = (cfg.clone(), data.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let out = Command::new(wharf_bin())
            .arg("--config")
            .arg(&cfg2)
            .arg("--data-dir")
            .arg(&data2)
            .args(["sync", "--no-progress"])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("MISSING required platform(s): linux/arm64"), "{out}");
    assert!(!out.contains("linux/amd64,"), "{out}");
    let status = Command::new(wharf_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .args(["sync", "status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["entries"][0]["tags"][0]["missing_platforms"], serde_json::json!(["linux/arm64"]), "{v}");
}
