//! The mirror cache budget end to end: an upstream Wharf with six ~1 MiB images, a mirror with
//! `[mirror] max_bytes` of about 2.5 images, everything pulled through it over plain HTTP. The least recently
//! used images are evicted (and fetched again on demand), the bytes under `blobs/` stay within the budget plus
//! one blob, and synced (pinned) and hosted content is never touched, also with the upstream gone.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{bytes_under, wharf_bin, Client, Server};
use crate::images::{multi_arch, Image, PLATFORMS};

const MIB: u64 = 1 << 20;

/// Pull `repo:reference` and everything below it, checking every digest; false at the first thing missing.
async fn pulls_whole(c: &Client, repo: &str, reference: &str, image: &Image) -> bool {
    image.pull_whole(c, repo, reference).await.is_ok()
}

async fn hub_blob_gets(hub: &Server) -> u64 {
    hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_eviction_keeps_the_cache_under_budget_and_spares_synced_and_hosted_content() {
    let hub = Server::start();
    let hc = hub.client();
    let images: Vec<Image> = (0..6).map(|i| multi_arch(700 + i, &PLATFORMS[..1], false, MIB as usize)).collect();
    for (i, img) in images.iter().enumerate() {
        img.push(&hc, &format!("library/app{i}"), "v1").await;
    }
    let synced = multi_arch(799, &PLATFORMS[..1], false, 20_000);
    synced.push(&hc, "library/synced", "v1").await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("wharf.toml");
    let budget = 5 * MIB / 2;
    std::fs::write(
        &cfg,
        format!(
            "[mirror]\nmax_bytes = \"2.5MiB\"\n\n[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n\n\
             [[sync]]\nupstream = \"docker.io\"\nrepository = \"library/synced\"\ntags = [\"v1\"]\n",
            hub.url
        ),
    )
    .unwrap();
    // The synced image is the oldest content of the cache.
    let out = Command::new(wharf_bin())
        .args(["sync", "--no-progress", "--config", cfg.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env_remove("WHARF_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "wharf sync: {}", String::from_utf8_lossy(&out.stderr));

    let mirror = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let c = mirror.client();
    let hosted = multi_arch(800, &PLATFORMS[..1], false, 30_000);
    hosted.push(&c, "team/app", "v1").await;
    let hosted_files = bytes_under(&data.join("repos/team/app"));

    let blobs = data.join("blobs");
    let mut peak = 0;
    for (i, img) in images.iter().enumerate() {
        assert!(pulls_whole(&c, &format!("docker.io/library/app{i}"), "v1", img).await, "app{i} through the mirror");
        peak = peak.max(bytes_under(&blobs));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The budget pass runs within a few seconds of the fills.
    let started = Instant::now();
    let limit = budget + MIB + 64 * 1024; // the budget plus one in-flight blob (and its config)
    while bytes_under(&blobs) > budget && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = bytes_under(&blobs);
    println!(
        "cache budget: budget {budget} B, peak under blobs/ while pulling {peak} B, after eviction {settled} B \
         ({} ms after the last pull)",
        started.elapsed().as_millis()
    );
    assert!(settled <= budget, "blobs/ holds {settled} bytes, budget {budget}");
    assert!(peak <= 6 * MIB + MIB, "{peak}");
    let evictions = mirror.metric("wharf_mirror_evictions_total", &["docker.io"]).await;
    let evicted = mirror.metric("wharf_mirror_evicted_bytes_total", &["docker.io"]).await;
    let cache = mirror.metric("wharf_mirror_cache_bytes", &["docker.io"]).await;
    println!("cache budget: {evictions} evictions, {evicted} bytes evicted, cache {cache} bytes");
    assert!(evictions >= 4 && evicted >= 4 * MIB, "{evictions} {evicted}");
    assert!(cache <= budget && cache >= 2 * MIB, "{cache}");
    let status = c.get("/_wharf/mirror").await.json();
    assert_eq!(status["budget"]["max_bytes"], budget);
    assert_eq!(status["budget"]["cache_bytes"], cache);
    assert_eq!(status["upstreams"][0]["evictions"], evictions);

    // The two most recently pulled images are still cached: pulling them asks the upstream for no blob.
    let gets = hub_blob_gets(&hub).await;
    for i in [4, 5] {
        assert!(pulls_whole(&c, &format!("docker.io/library/app{i}"), "v1", &images[i]).await);
    }
    assert_eq!(hub_blob_gets(&hub).await, gets, "app4 and app5 came from the cache");
    // An evicted image is a miss: fetched again, verified.
    assert!(pulls_whole(&c, "docker.io/library/app0", "v1", &images[0]).await, "app0 again");
    assert!(hub_blob_gets(&hub).await >= gets + 2, "app0 was fetched from the upstream again");
    let started = Instant::now();
    while bytes_under(&blobs) > budget && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = bytes_under(&blobs);
    println!("cache budget: after pulling an evicted image again {again} B");
    assert!(again <= limit, "{again}");

    // With the upstream gone, the synced image (older than everything) and hosted content are still whole.
    drop(hub);
    assert!(pulls_whole(&c, "docker.io/library/synced", "v1", &synced).await, "synced image without upstream");
    assert!(pulls_whole(&c, "team/app", "v1", &hosted).await, "hosted image");
    assert_eq!(bytes_under(&data.join("repos/team/app")), hosted_files, "hosted repository untouched");
}

/// A real containerd pulling through the budgeted mirror (`hosts.toml`): six images, a cache of 2.5; the
/// evicted first image comes back for a fresh containerd, fetched again from the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_a_budgeted_mirror() {
    use crate::external::containerd::{write_hosts_toml, Containerd};

    let hub = Server::start();
    let images: Vec<Image> = (0..6).map(|i| multi_arch(900 + i, &PLATFORMS[..1], false, MIB as usize)).collect();
    for (i, img) in images.iter().enumerate() {
        img.push(&hub.client(), &format!("library/ctr{i}"), "v1").await;
    }
    let mirror = Server::start_config(&format!(
        "[mirror]\nmax_bytes = {}\n\n[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n",
        5 * MIB / 2,
        hub.url
    ));
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(hosts.path(), "docker.io", &mirror.url);
    let ctrd = Containerd::start();
    for i in 0..6 {
        tokio::task::block_in_place(|| ctrd.fetch(hosts.path(), &format!("docker.io/library/ctr{i}:v1"), None, true));
    }
    drop(ctrd);
    let blobs = mirror.data_dir.join("blobs");
    let started = Instant::now();
    while bytes_under(&blobs) > 5 * MIB / 2 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = bytes_under(&blobs);
    println!("containerd through a 2.5 MiB cache: {settled} B under blobs/ after {} ms", started.elapsed().as_millis());
    assert!(settled <= 5 * MIB / 2, "{settled}");
    assert!(mirror.metric("wharf_mirror_evictions_total", &[]).await >= 4);
    let gets = hub_blob_gets(&hub).await;
    let fresh = Containerd::start();
    tokio::task::block_in_place(|| fresh.fetch(hosts.path(), "docker.io/library/ctr0:v1", None, true));
    assert_eq!(fresh.image_target("docker.io/library/ctr0:v1"), Some(images[0].index.digest.to_string()));
    let have = fresh.content_digests();
    for b in &images[0].blobs {
        assert!(have.contains(&b.digest.to_string()), "{} missing", b.digest);
    }
    assert!(hub_blob_gets(&hub).await >= gets + 2, "the evicted image was fetched from the upstream again");
}
