//! Seeds a data directory for the garbage-collection benchmark (`bench/run.sh --sections gc`) through the
//! store's own API, the way pushes store content, many writes at once:
//!
//! ```text
//! cargo run --release -p wharf --example gc_seed -- --data-dir DIR --blobs 100000 [--manifests N]
//!     [--per-repo 100] [--concurrency 64]
//! ```
//!
//! Content, with M manifests (default blobs / 10) in repositories `gcbench/rNNNNN` of `--per-repo` manifests:
//! every manifest is an OCI image manifest with a config and 9 layers (10 blob references): the first layer is
//! one of the repository's shared base layers (one base per 4 manifests), the config and the other 8 layers are
//! its own. Layers are 64-512 random bytes; a config is an image config JSON naming its layers (~800 bytes). Even-numbered manifests are tagged (`tNNNNN`), odd ones are not.
//! The pool is topped up to exactly `--blobs` with orphan uploads: blobs linked into a repository that no
//! manifest references (a push whose manifest never came). So with `wharf gc --grace 0s` the garbage is the
//! untagged manifests, their own blobs (config + 8 layers each) and the orphans; the tagged manifests and every
//! base layer (each has tagged users) stay. The numbers are printed as one JSON line on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Descriptor, Digest, MediaType, RepoName, Tag};
use wharf::store::fs::FsStore;
use wharf::store::{ByteStream, ContentStore, StoredManifest};

const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Layers per manifest (plus the config: 10 blob references).
const LAYERS: u64 = 9;
/// Manifests sharing one base layer.
const BASE_USERS: u64 = 4;

struct Args {
    data_dir: PathBuf,
    blobs: u64,
    manifests: Option<u64>,
    per_repo: u64,
    concurrency: usize,
}

fn usage() -> String {
    "usage: gc_seed --data-dir DIR --blobs N [--manifests M (default N/10)] [--per-repo 100] [--concurrency 64]".into()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { data_dir: PathBuf::new(), blobs: 0, manifests: None, per_repo: 100, concurrency: 64 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} takes a value\n{}", usage()));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--data-dir" => a.data_dir = PathBuf::from(v()?),
            "--blobs" => a.blobs = num(v()?)?,
            "--manifests" => a.manifests = Some(num(v()?)?),
            "--per-repo" => a.per_repo = num(v()?)?.max(1),
            "--concurrency" => a.concurrency = num(v()?)?.max(1) as usize,
            "-h" | "--help" => return Err(usage()),
            _ => return Err(format!("unknown argument {k}\n{}", usage())),
        }
    }
    if a.data_dir.as_os_str().is_empty() || a.blobs == 0 {
        return Err(usage());
    }
    Ok(a)
}

/// splitmix64: deterministic, fast, good enough for filler bytes.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Blob number `n`: 64-512 bytes, starting with `n` so every blob is distinct.
fn blob_bytes(n: u64) -> Bytes {
    let len = 64 + (mix(n ^ 0x5eed) % 449) as usize;
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&n.to_le_bytes());
    let mut s = n;
    while v.len() < len {
        s = mix(s);
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// Put blob `n` (random bytes) into the pool and link it into `repo`.
async fn put_blob(store: &dyn ContentStore, repo: &RepoName, n: u64) -> Result<(Digest, u64), String> {
    put_bytes(store, repo, blob_bytes(n)).await
}

/// Put `bytes` into the pool and link them into `repo`; returns the digest and size.
async fn put_bytes(store: &dyn ContentStore, repo: &RepoName, bytes: Bytes) -> Result<(Digest, u64), String> {
    let d = Digest::sha256_of(&bytes);
    let size = bytes.len() as u64;
    let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(bytes)]));
    store.blob_put(&d, Some(size), body).await.map_err(|e| format!("blob_put {d}: {e}"))?;
    store.blob_link(repo, &d).await.map_err(|e| format!("blob_link {repo} {d}: {e}"))?;
    Ok((d, size))
}

fn desc(media_type: &str, d: &Digest, size: u64) -> String {
    format!(r#"{{"mediaType":"{media_type}","digest":"{d}","size":{size}}}"#)
}

/// The plan for one repository: `first` global manifest number, `count` manifests, `orphans` extra blobs.
struct Repo {
    index: u64,
    first: u64,
    count: u64,
    orphans: u64,
}

struct Seed {
    store: Arc<dyn ContentStore>,
    /// Next blob number (each blob gets one).
    next_blob: AtomicU64,
    blobs_done: AtomicU64,
    concurrency: usize,
}

impl Seed {
    fn take(&self, n: u64) -> u64 {
        self.next_blob.fetch_add(n, Ordering::Relaxed)
    }

    async fn repo(&self, r: Repo) -> Result<(), String> {
        let store = self.store.as_ref();
        let name: RepoName = format!("gcbench/r{:05}", r.index).parse().map_err(|e| format!("repo name: {e:?}"))?;
        let bases = r.count.div_ceil(BASE_USERS);
        let first_base = self.take(bases);
        let base: Vec<(Digest, u64)> = futures_util::stream::iter(0..bases)
            .map(|i| put_blob(store, &name, first_base + i))
            .buffered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        self.blobs_done.fetch_add(bases, Ordering::Relaxed);
        let name = &name;
        let base = &base;
        let first = r.first;
        futures_util::stream::iter(0..r.count)
            .map(|i| async move {
                let m = first + i;
                // 8 own layers written at once, then the config (an image config naming the 9 layers), then the
                // manifest (its references first, as a push).
                let own = self.take(LAYERS);
                let parts: Vec<(Digest, u64)> =
                    futures_util::future::join_all((1..LAYERS).map(|k| put_blob(store, name, own + k)))
                        .await
                        .into_iter()
                        .collect::<Result<_, _>>()?;
                let (bd, bs) = &base[(i % bases) as usize];
                let mut layers = vec![(bd.clone(), *bs)];
                layers.extend(parts);
                let diff_ids: Vec<String> = layers.iter().map(|(d, _)| format!("\"{d}\"")).collect();
                let config = format!(
                    r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"org.wharf.bench.blob":"{own}"}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
                    diff_ids.join(",")
                );
                let (cd, cs) = put_bytes(store, name, Bytes::from(config)).await?;
                self.blobs_done.fetch_add(LAYERS, Ordering::Relaxed);
                let layers: Vec<String> = layers.iter().map(|(d, s)| desc(LAYER_TYPE, d, *s)).collect();
                let json = format!(
                    r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{},"layers":[{}],"annotations":{{"org.wharf.bench.manifest":"{m}"}}}}"#,
                    desc(CONFIG_TYPE, &cd, cs),
                    layers.join(",")
                );
                let bytes = Bytes::from(json);
                let md = Digest::sha256_of(&bytes);
                let stored = StoredManifest { bytes, media_type: MediaType::OciManifest };
                store.manifest_put(name, &md, &stored, None::<(&Digest, &Descriptor)>).await.map_err(|e| format!("manifest_put {name} {md}: {e}"))?;
                if m & 1 == 0 {
                    let tag: Tag = format!("t{m:07}").parse().map_err(|e| format!("tag: {e:?}"))?;
                    store.tag_put(name, &tag, &md).await.map_err(|e| format!("tag_put {name}:{tag}: {e}"))?;
                }
                Ok::<(), String>(())
            })
            .buffer_unordered((self.concurrency / LAYERS as usize).max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        let first_orphan = self.take(r.orphans);
        futures_util::stream::iter(0..r.orphans)
            .map(|i| put_blob(store, name, first_orphan + i))
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        self.blobs_done.fetch_add(r.orphans, Ordering::Relaxed);
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let manifests = args.manifests.unwrap_or(args.blobs / 10).max(1);
    let repos = manifests.div_ceil(args.per_repo);
    // Blobs the manifests use: own (config + 8 layers) and one base per BASE_USERS manifests of a repository.
    let mut plan = Vec::new();
    let mut used = 0;
    for r in 0..repos {
        let first = r * args.per_repo;
        let count = args.per_repo.min(manifests - first);
        used += count * LAYERS + count.div_ceil(BASE_USERS);
        plan.push(Repo { index: r, first, count, orphans: 0 });
    }
    if used > args.blobs {
        eprintln!("{manifests} manifests need {used} blobs, more than --blobs {}", args.blobs);
        return ExitCode::from(2);
    }
    let orphans = args.blobs - used;
    for (i, r) in plan.iter_mut().enumerate() {
        r.orphans = orphans / repos + u64::from((i as u64) < orphans % repos);
    }
    let tagged = manifests.div_ceil(2);
    let untagged = manifests - tagged;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(args.concurrency.max(8))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let result = rt.block_on(async {
        let store: Arc<dyn ContentStore> =
            Arc::new(FsStore::open(&args.data_dir).map_err(|e| format!("open {}: {e}", args.data_dir.display()))?);
        let seed = Arc::new(Seed {
            store,
            next_blob: AtomicU64::new(0),
            blobs_done: AtomicU64::new(0),
            concurrency: args.concurrency,
        });
        let progress = {
            let seed = seed.clone();
            let total = args.blobs;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    let done = seed.blobs_done.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!("gc_seed: {done}/{total} blobs, {secs:.0} s, {:.0} blobs/s", done as f64 / secs);
                }
            })
        };
        // Repositories a few at a time, each with its own writes in flight.
        let r = futures_util::stream::iter(plan)
            .map(|r| {
                let seed = seed.clone();
                async move { seed.repo(r).await }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, String>>();
        progress.abort();
        r.map(|_| seed.next_blob.load(Ordering::Relaxed))
    });
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            eprintln!("gc_seed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let garbage_blobs = untagged * (LAYERS) + orphans;
    println!(
        r#"{{"blobs":{written},"manifests":{manifests},"repositories":{repos},"tagged":{tagged},"untagged":{untagged},"orphan_blobs":{orphans},"garbage_manifests":{untagged},"garbage_blobs":{garbage_blobs},"seconds":{secs:.3},"blobs_per_sec":{:.1}}}"#,
        written as f64 / secs
    );
    ExitCode::SUCCESS
}
