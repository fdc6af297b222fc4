//! The sync engine: `wharf sync` against Wharf and CNCF distribution upstreams, compared digest by digest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oci::Digest;
use reqwest::Method;
use serde_json::json;

use crate::common::{die_with_parent, wharf_bin, Client, Server};
use crate::external::containerd::{write_hosts_toml, Containerd};
use crate::external::distribution::{Distribution, DistributionOpts};
use crate::external::push_image;
use crate::external::token_proxy::TokenProxy;
use crate::images::{multi_arch, Content, Image, DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, PLATFORMS};

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(config: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wharf.toml"), config).unwrap();
        Workspace { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("wharf.toml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn rewrite(&self, config: &str) {
        std::fs::write(self.config(), config).unwrap();
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(wharf_bin());
        c.arg("sync").args(["--config", self.config().to_str().unwrap(), "--data-dir", self.data().to_str().unwrap()]);
        c.args(extra).env_remove("WHARF_CONFIG").env_remove("WHARF_DATA_DIR").env("RUST_LOG", "warn");
        die_with_parent(&mut c);
        c
    }

    /// `wharf sync` (blocking; call from spawn_blocking or accept blocking the test thread).
    fn sync(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }

    fn serve(&self) -> Server {
        Server::start_with(&self.data(), &["--config", self.config().to_str().unwrap()])
    }

    fn blob_exists(&self, d: &Digest) -> bool {
        blob_path(&self.data(), d).exists()
    }
}

fn blob_path(data: &Path, d: &Digest) -> PathBuf {
    data.join("blobs").join(d.algorithm().as_str()).join(&d.hex()[..2]).join(d.hex())
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// An in-toto attestation per platform manifest, pushed as referrers.
async fn push_attestations(c: &Client, repo: &str, img: &Image) -> Vec<Content> {
    let payload = c.push_blob(repo, b"{\"predicateType\":\"https://slsa.dev/provenance/v1\"}").await;
    let empty = c.push_blob(repo, b"{}").await;
    let mut out = Vec::new();
    for m in &img.manifests {
        let att = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.in-toto+json",
            "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2 },
            "layers": [{ "mediaType": "application/vnd.in-toto+json", "digest": payload.to_string(), "size": 50 }],
            "subject": m.descriptor(),
        }))
        .unwrap();
        let d = Digest::sha256_of(&att);
        let r = c.push_manifest(repo, &d.to_string(), OCI_MANIFEST, &att).await;
        assert_eq!(r.status, 201);
        out.push(Content { digest: d, media_type: OCI_MANIFEST.into(), bytes: att });
    }
    out
}

async fn assert_same_content(local: &Client, repo: &str, tag: &str, img: &Image) {
    let accept = format!("{OCI_INDEX}, {DOCKER_LIST}");
    let r = local.req(Method::GET, &format!("/v2/{repo}/manifests/{tag}"), &[("accept", &accept)], None).await;
    assert_eq!(r.status, 200, "{repo}:{tag}");
    assert_eq!(&r.body[..], &img.index.bytes[..], "{repo}:{tag} index bytes");
    for m in &img.manifests {
        let r = local.get(&format!("/v2/{repo}/manifests/{}", m.digest)).await;
        assert_eq!(&r.body[..], &m.bytes[..]);
    }
    for b in &img.blobs {
        let r = local.get(&format!("/v2/{repo}/blobs/{}", b.digest)).await;
        assert_eq!(Digest::sha256_of(&r.body), b.digest);
    }
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out =
        Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", reference]).output().expect("skopeo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_copies_every_digest_from_wharf_and_distribution_upstreams() {
    let hub = Server::start();
    let c = hub.client();
    let versions = ["1.28.4", "1.29.0", "1.30.2", "1.31.1", "1.32.0"];
    let mut images = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let img = multi_arch(100 + i as u64, &PLATFORMS[..4], false, 3_000);
        img.push(&c, "library/kindest", v).await;
        images.push(img);
    }
    let attestations = push_attestations(&c, "library/kindest", &images[2]).await;
    let dist = Distribution::start(DistributionOpts::default());
    let list = multi_arch(110, &PLATFORMS[..4], true, 3_000);
    push_image(&dist.client(), &list, "calico/node", "v3.28.0").await;

    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[upstream]]\nname = \"quay.io\"\nurl = \"{}\"\n\n\
         [[sync]]\nupstream = \"docker.io\"\nrepository = \"kindest\"\ntags = [\"semver:>=1.29, <1.32\"]\n\n\
         [[sync]]\nupstream = \"quay.io\"\nrepository = \"calico/node\"\ntags = [\"v3.28.0\"]\n",
        hub.url, dist.url
    ));
    let ws_ref = &ws;
    let out = tokio::task::block_in_place(|| ws_ref.sync(&[]));
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("1.29.0")
            && report.contains("1.31.1")
            && !report.contains("1.28.4")
            && !report.contains("1.32.0"),
        "{report}"
    );

    let local = ws.serve();
    let lc = local.client();
    // Only the selected tags were synced (tags/list shows local content only; the mirror would fetch others).
    let tags = lc.get("/v2/docker.io/library/kindest/tags/list").await.json();
    assert_eq!(tags["tags"], json!(["1.29.0", "1.30.2", "1.31.1"]));
    for i in 1..=3 {
        assert_same_content(&lc, "docker.io/library/kindest", versions[i], &images[i]).await;
    }
    assert_same_content(&lc, "quay.io/calico/node", "v3.28.0", &list).await;
    // attestations came along as referrers
    for (m, att) in images[2].manifests.iter().zip(&attestations) {
        let r = lc.get(&format!("/v2/docker.io/library/kindest/referrers/{}", m.digest)).await.json();
        assert_eq!(r["manifests"][0]["digest"], att.digest.to_string());
        assert_eq!(r["manifests"][0]["artifactType"], "application/vnd.in-toto+json");
    }
    // skopeo sees the same index bytes at the upstream and here
    let (hub_addr, dist_addr, local_addr) = (hub.addr.clone(), dist.addr.clone(), local.addr.clone());
    tokio::task::block_in_place(|| {
        assert_eq!(
            skopeo_raw(&format!("docker://{hub_addr}/library/kindest:1.30.2")),
            skopeo_raw(&format!("docker://{local_addr}/docker.io/library/kindest:1.30.2"))
        );
        assert_eq!(
            skopeo_raw(&format!("docker://{dist_addr}/calico/node:v3.28.0")),
            skopeo_raw(&format!("docker://{local_addr}/quay.io/calico/node:v3.28.0"))
        );
    });
    // status: CLI and endpoint
    let status = lc.get("/_wharf/sync").await.json();
    let entries = status["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let tags = entries[0]["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 3);
    assert_eq!(tags[0]["platforms"].as_array().unwrap().len(), 4);
    assert!(tags.iter().all(|t| t["action"] == "created"));
    drop(local);
    let out = tokio::task::block_in_place(|| {
        let mut c = ws.command(&["status", "--json"]);
        c.output().unwrap()
    });
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["entries"][1]["tags"][0]["digest"], list.index.digest.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_with_nothing_new_makes_no_blob_or_manifest_gets() {
    let hub = Server::start();
    let img = multi_arch(120, &PLATFORMS[..4], false, 2_000);
    img.push(&hub.client(), "library/a", "v1").await;
    img.push(&hub.client(), "library/a", "v2").await;
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"a\"\ntags = [\"v*\"]\n",
        hub.url
    ));
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(out.status.success(), "{}", text(&out));
    let blob_gets = hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await;
    let manifest_gets = hub.metric("wharf_requests_total", &["endpoint=\"manifest_get\""]).await;
    assert_eq!(blob_gets, img.blobs.len() as u64, "each blob once, although two tags share them");
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    assert_eq!(
        hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await,
        blob_gets,
        "no blob GET on a no-op re-run"
    );
    assert_eq!(
        hub.metric("wharf_requests_total", &["endpoint=\"manifest_get\""]).await,
        manifest_gets,
        "no manifest GET either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sync_resumes_without_fetching_complete_blobs_again() {
    let origin = Server::start();
    let mut img = multi_arch(130, &PLATFORMS[..2], false, 4_000);
    // Make the first platform's layer large, and rebuild its manifest and the index around it.
    let big = crate::images::noise(131, 48 * 1024 * 1024);
    img = with_big_first_layer(img, big);
    img.push(&origin.client(), "library/big", "v1").await;
    // The token proxy logs every forwarded request, so fetches can be counted per digest.
    let front = TokenProxy::start(&origin.url, None, None);
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"big\"\ntags = [\"v1\"]\nmax_bytes_per_sec = 16000000\n",
        front.url
    ));
    let mut child = ws.command(&["--no-progress"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    // Wait until the big layer is part-way through, then kill -9.
    let tmp = ws.data().join("tmp");
    let t0 = std::time::Instant::now();
    loop {
        let partial: u64 = walk_sizes(&tmp);
        if partial > 8 * 1024 * 1024 {
            break;
        }
        assert!(t0.elapsed().as_secs() < 60, "the big layer never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let big_digest = img.blobs[0].digest.clone();
    assert!(!ws.blob_exists(&big_digest), "the interrupted layer is not visible");
    let first_run: Vec<String> = front.stats.forwarded();

    let out = tokio::task::block_in_place(|| ws.sync(&["--no-progress"]));
    assert!(out.status.success(), "{}", text(&out));
    let all = front.stats.forwarded();
    for b in &img.blobs {
        let gets = all.iter().filter(|l| l.starts_with("GET ") && l.contains(&format!("/blobs/{}", b.digest))).count();
        let completed_in_first = b.digest != big_digest
            && first_run.iter().any(|l| l.starts_with("GET ") && l.contains(&format!("/blobs/{}", b.digest)));
        if b.digest == big_digest {
            assert_eq!(gets, 2, "the interrupted layer is fetched again, once");
        } else {
            assert_eq!(gets, 1, "{} fetched {gets} times (completed in first run: {completed_in_first})", b.digest);
        }
        assert!(ws.blob_exists(&b.digest));
    }
    let local = ws.serve();
    assert_same_content(&local.client(), "docker.io/library/big", "v1", &img).await;
}

fn walk_sizes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_sizes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn with_big_first_layer(img: Image, big: Vec<u8>) -> Image {
    let mut img = img;
    let old_layer = img.blobs[0].digest.to_string();
    let layer = Content { digest: Digest::sha256_of(&big), media_type: img.blobs[0].media_type.clone(), bytes: big };
    let replace = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace(&old_layer, &layer.digest.to_string())
            .replace("\"size\": 4000", &format!("\"size\": {}", layer.bytes.len()))
            .into_bytes()
    };
    let config = replace(&img.blobs[1].bytes);
    img.blobs[1] =
        Content { digest: Digest::sha256_of(&config), media_type: img.blobs[1].media_type.clone(), bytes: config };
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifests[0].bytes).unwrap();
    m["layers"][0] = layer.descriptor();
    m["config"] = img.blobs[1].descriptor();
    let mbytes = serde_json::to_vec_pretty(&m).unwrap();
    img.manifests[0] =
        Content { digest: Digest::sha256_of(&mbytes), media_type: img.manifests[0].media_type.clone(), bytes: mbytes };
    let mut idx: serde_json::Value = serde_json::from_slice(&img.index.bytes).unwrap();
    let platform = idx["manifests"][0]["platform"].clone();
    idx["manifests"][0] = img.manifests[0].descriptor();
    idx["manifests"][0]["platform"] = platform;
    let ibytes = serde_json::to_vec_pretty(&idx).unwrap();
    img.index = Content { digest: Digest::sha256_of(&ibytes), media_type: img.index.media_type.clone(), bytes: ibytes };
    img.blobs[0] = layer;
    img
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_tags_follow_when_mutable_and_conflict_when_immutable() {
    let hub = Server::start();
    let h = hub.client();
    let old = multi_arch(140, &PLATFORMS[..2], false, 1_000);
    let new = multi_arch(141, &PLATFORMS[..2], false, 1_000);
    old.push(&h, "library/app", "1.2.3").await;
    old.push(&h, "library/app", "latest").await;
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\nimmutable_tags = ['re:^[0-9]+\\.[0-9]+\\.[0-9]+$']\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"app\"\ntags = [\"1.2.3\", \"latest\"]\n",
        hub.url
    ));
    assert!(tokio::task::block_in_place(|| ws.sync(&[])).status.success());
    let check = tokio::task::block_in_place(|| ws.sync(&["--check"]));
    assert!(check.status.success(), "no drift right after a sync: {}", text(&check));

    new.push(&h, "library/app", "1.2.3").await;
    new.push(&h, "library/app", "latest").await;
    let check = tokio::task::block_in_place(|| ws.sync(&["--check"]));
    assert_eq!(check.status.code(), Some(1), "drift and a conflict are reported");
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert_eq!(out.status.code(), Some(1), "a conflict makes the run fail");
    let t = text(&out);
    assert!(t.contains("CONFLICT 1.2.3") && t.contains(&new.index.digest.to_string()), "{t}");

    let local = ws.serve();
    let lc = local.client();
    let digest_of = |tag: &'static str| {
        let lc = lc.clone();
        async move {
            lc.get(&format!("/v2/docker.io/library/app/manifests/{tag}")).await.header("docker-content-digest").unwrap()
        }
    };
    assert_eq!(digest_of("1.2.3").await, old.index.digest.to_string(), "immutable tag kept");
    assert_eq!(digest_of("latest").await, new.index.digest.to_string(), "mutable tag followed");
    let history: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.data().join("meta/history/docker.io/library/app/latest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(history[1]["old"], old.index.digest.to_string());
    assert_eq!(history[1]["new"], new.index.digest.to_string());
    assert!(history[1]["source"].as_str().unwrap().starts_with("sync:"));
    let status = lc.get("/_wharf/sync").await.json();
    assert_eq!(status["entries"][0]["conflicts"][0]["tag"], "1.2.3");
    // synced manifests are pinned
    assert!(ws.data().join(format!("meta/pins/docker.io/library/app/sha256-{}", old.index.digest.hex())).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_subset_keeps_the_index_and_stores_only_those_platforms() {
    let hub = Server::start();
    let img = multi_arch(150, &PLATFORMS[..4], false, 2_000);
    img.push(&hub.client(), "library/sub", "v1").await;
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"sub\"\ntags = [\"v1\"]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n",
        hub.url
    ));
    let dry = tokio::task::block_in_place(|| ws.sync(&["--dry-run"]));
    assert!(dry.status.success() && text(&dry).contains("would-copy"), "{}", text(&dry));
    assert!(!ws.blob_exists(&img.blobs[0].digest), "a dry run copies nothing");
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2/4 platforms"), "{}", text(&out));
    for (i, (_, arch, _)) in PLATFORMS[..4].iter().enumerate() {
        let wanted = *arch == "amd64" || *arch == "arm64";
        for b in &img.blobs[2 * i..2 * i + 2] {
            assert_eq!(ws.blob_exists(&b.digest), wanted, "{arch} blob {}", b.digest);
        }
    }
    let local = ws.serve();
    let r = local.client().get("/v2/docker.io/library/sub/manifests/v1").await;
    assert_eq!(&r.body[..], &img.index.bytes[..], "the index is kept byte for byte");
    assert_eq!(r.header("docker-content-digest"), Some(img.index.digest.to_string()));
    let status = local.client().get("/_wharf/sync").await.json();
    let platforms = status["entries"][0]["tags"][0]["platforms"].as_array().unwrap().clone();
    let present: Vec<&str> =
        platforms.iter().filter(|p| p["present"] == true).map(|p| p["platform"].as_str().unwrap()).collect();
    assert_eq!(present, ["linux/amd64", "linux/arm64/v8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_synced_images_with_the_upstream_gone() {
    let hub = Server::start();
    let img = multi_arch(160, &PLATFORMS[..4], false, 3_000);
    img.push(&hub.client(), "library/base", "1.0.0").await;
    let config = |url: &str| {
        format!("[[upstream]]\nname = \"docker.io\"\nurl = \"{url}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"base\"\ntags = [\"1.0.0\"]\n")
    };
    let ws = Workspace::new(&config(&hub.url));
    assert!(tokio::task::block_in_place(|| ws.sync(&[])).status.success());
    drop(hub);
    ws.rewrite(&config("http://127.0.0.1:1"));
    let wharf = ws.serve();
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(hosts.path(), "docker.io", &wharf.url);
    let ctrd = Containerd::start();
    ctrd.fetch(hosts.path(), "docker.io/library/base:1.0.0", None, true);
    let have = ctrd.content_digests();
    for c in img.blobs.iter().chain(&img.manifests).chain([&img.index]) {
        assert!(have.contains(&c.digest.to_string()), "{} missing", c.digest);
    }
    assert_eq!(ctrd.image_target("docker.io/library/base:1.0.0"), Some(img.index.digest.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_can_seed_another_registry() {
    let hub = Server::start();
    let img = multi_arch(170, &PLATFORMS[..3], false, 2_000);
    img.push(&hub.client(), "library/seed", "v1").await;
    let dest = Distribution::start(DistributionOpts { basic_auth: true, ..Default::default() });
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"seed\"\ntags = [\"v1\"]\ndestination = {{ url = \"{}\", repository = \"mirror/seed\", username = \"{}\", password = \"{}\" }}\n",
        hub.url, dest.url, crate::external::distribution::USER, crate::external::distribution::PASSWORD
    ));
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(out.status.success(), "{}", text(&out));
    let dc = dest.client();
    let r = dc.req(Method::GET, "/v2/mirror/seed/manifests/v1", &[("accept", OCI_INDEX)], None).await;
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    for m in &img.manifests {
        let r = dc
            .req(Method::GET, &format!("/v2/mirror/seed/manifests/{}", m.digest), &[("accept", OCI_MANIFEST)], None)
            .await;
        assert_eq!(&r.body[..], &m.bytes[..]);
    }
    for b in &img.blobs {
        assert_eq!(&dc.get(&format!("/v2/mirror/seed/blobs/{}", b.digest)).await.body[..], &b.bytes[..]);
    }
    // nothing was written locally
    assert!(!ws.blob_exists(&img.blobs[0].digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_schedules_in_the_background() {
    let hub = Server::start();
    let img = multi_arch(180, &PLATFORMS[..2], false, 1_000);
    img.push(&hub.client(), "library/sched", "v1").await;
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"sched\"\ntags = [\"v1\"]\nevery = \"1h\"\n",
        hub.url
    ));
    let wharf = ws.serve();
    let c = wharf.client();
    let t0 = std::time::Instant::now();
    loop {
        let s = c.get("/_wharf/sync").await.json();
        if s["entries"].as_array().is_some_and(|e| !e.is_empty()) {
            assert_eq!(s["entries"][0]["tags"][0]["action"], "created");
            break;
        }
        assert!(t0.elapsed().as_secs() < 30, "the scheduled sync did not run");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(hub);
    assert_same_content(&c, "docker.io/library/sched", "v1", &img).await;
}

#[test]
fn config_check_names_every_sync_problem() {
    let ws = Workspace::new(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n\n\
         [[sync]]\nupstream = \"ghcr.io\"\nrepository = \"Bad Name\"\ntags = [\"semver:>=>1\"]\nplatforms = [\"linux\"]\nevery = \"5w\"\n",
    );
    let out = Command::new(wharf_bin()).args(["config", "check", ws.config().to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["sync[0].upstream", "sync[0].repository", "sync[0].tags[0]", "sync[0].platforms[0]", "sync[0].every"] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_completes_what_the_mirror_cached_only_in_part() {
    let hub = Server::start();
    let img = multi_arch(190, &PLATFORMS[..4], false, 2_000);
    img.push(&hub.client(), "library/part", "v1").await;
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"part\"\ntags = [\"v1\"]\n",
        hub.url
    ));
    {
        // A node pulls one platform's manifest through the mirror: index and tag cached, no layers.
        let mirror = ws.serve();
        let c = mirror.client();
        assert_eq!(c.get("/v2/library/part/manifests/v1?ns=docker.io").await.status, 200);
        assert_eq!(
            c.get(&format!("/v2/library/part/manifests/{}?ns=docker.io", img.manifests[0].digest)).await.status,
            200
        );
    }
    assert!(!ws.blob_exists(&img.blobs[0].digest));
    let out = tokio::task::block_in_place(|| ws.sync(&["--check"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("incomplete"), "{}", text(&out));
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("completed"), "{}", text(&out));
    for b in &img.blobs {
        assert!(ws.blob_exists(&b.digest), "{} missing after sync", b.digest);
    }
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(text(&out).contains("unchanged"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_fetches_only_the_new_index_not_the_children_it_holds() {
    let hub = Server::start();
    let img = multi_arch(230, &PLATFORMS[..4], false, 2_000);
    img.push(&hub.client(), "library/moved", "v1").await;
    let ws = Workspace::new(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n[[sync]]\nupstream = \"docker.io\"\nrepository = \"moved\"\ntags = [\"v1\"]\n",
        hub.url
    ));
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(out.status.success(), "{}", text(&out));
    let before = hub.metric("wharf_requests_total", &["endpoint=\"manifest_get\""]).await;
    // The tag is rebuilt upstream: a new index over the very same platform manifests.
    let mut index: serde_json::Value = serde_json::from_slice(&img.index.bytes).unwrap();
    index["annotations"] = json!({ "rebuilt": "yes" });
    let rebuilt = serde_json::to_vec(&index).unwrap();
    let r = hub.client().push_manifest("library/moved", "v1", OCI_INDEX, &rebuilt).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let out = tokio::task::block_in_place(|| ws.sync(&[]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("updated"), "{}", text(&out));
    let after = hub.metric("wharf_requests_total", &["endpoint=\"manifest_get\""]).await;
    assert_eq!(after - before, 1, "only the new index is fetched; the platform manifests are already held");
}

#[test]
fn sync_status_reports_an_unreadable_report_instead_of_skipping_it() {
    let ws = Workspace::new(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"http://127.0.0.1:9\"\n\n\
         [[sync]]\nupstream = \"docker.io\"\nrepository = \"library/alpine\"\ntags = [\"3.20\"]\n",
    );
    let key = wharf::sync::report::Report::key("docker.io/library/alpine");
    let file = ws.data().join("meta").join(&key);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"{ truncated by a full disk").unwrap();
    let mut status = ws.command(&["status"]);
    let out = status.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("docker.io/library/alpine") && all.contains("not a valid report"), "{all}");
    let out = ws.command(&["status", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["entries"][0]["errors"][0].as_str().unwrap().contains("not a valid report"), "{json}");
}
