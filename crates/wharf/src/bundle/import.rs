//! `wharf bundle import`: verify and load a bundle (Wharf's own or any OCI layout tar, such as skopeo's
//! `oci-archive:`) into the store or a registry. Two passes over the file, never unpacked: the first lists the
//! entries (offsets and sizes) and reads `index.json` and the manifests it reaches (each checked against its
//! digest); the second streams every needed blob into the destination, where it is checked against its
//! digest and size before it becomes visible. Then manifests go in children first, tags last, and the local
//! store pins what it received (garbage collection keeps it). A blob the bundle lacks must already be at the
//! destination (an incremental bundle), or the import stops before any manifest is written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use oci::{Descriptor, Digest, Manifest, ManifestBody, RepoName, Tag};

use super::{blob_path, parse_ref, BundleError, MAX_INDEX_BYTES, REF_NAME};
use crate::store::ContentStore;
use crate::transfer::{Destination, MAX_TREE_MANIFESTS};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Repository prefix for every image (`mirror` makes `team/app:v1` land in `mirror/team/app:v1`); for an
    /// entry named by a tag only (skopeo's `oci-archive:b.tar:v1`) the repository itself.
    pub to: Option<String>,
    /// Move tags that exist at the destination and point elsewhere (refused without it).
    pub force: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// `repo:tag` → digest.
    pub images: BTreeMap<String, String>,
    /// Manifests written (referrers included).
    pub manifests: u64,
    /// Blobs streamed from the bundle.
    pub blobs_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
    /// Blobs the destination had already.
    pub blobs_present: u64,
}

/// Entries of the tar: path → (data offset, size).
type Listing = HashMap<String, (u64, u64)>;

fn list(path: &Path) -> Result<Listing, BundleError> {
    let io = |e: std::io::Error| BundleError::Io { path: path.display().to_string(), source: e };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut archive = tar::Archive::new(file);
    let mut out = Listing::new();
    for entry in archive.entries_with_seek().map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path().map_err(io)?.to_string_lossy().trim_start_matches("./").to_owned();
        out.insert(name, (entry.raw_file_position(), entry.size()));
    }
    Ok(out)
}

fn read_at(path: &Path, listing: &Listing, name: &str, limit: u64) -> Result<Option<Vec<u8>>, BundleError> {
    let Some(&(offset, size)) = listing.get(name) else { return Ok(None) };
    if size > limit {
        return Err(BundleError::Invalid(format!("{name}: {size} bytes, more than {limit}")));
    }
    let io = |e: std::io::Error| BundleError::Io { path: path.display().to_string(), source: e };
    let mut f = std::fs::File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0; size as usize];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(Some(buf))
}

/// A manifest of the bundle, checked against its digest.
fn manifest_at(path: &Path, listing: &Listing, d: &Descriptor) -> Result<Option<Manifest>, BundleError> {
    let Some(bytes) = read_at(path, listing, &blob_path(&d.digest), oci::MAX_MANIFEST_BYTES as u64)? else {
        return Ok(None);
    };
    let m = Manifest::parse(Bytes::from(bytes), Some(&d.media_type), d.digest.algorithm())
        .map_err(|e| BundleError::Invalid(format!("manifest {}: {e}", d.digest)))?;
    if m.digest != d.digest {
        return Err(BundleError::Invalid(format!("manifest {}: its bytes hash to {}", d.digest, m.digest)));
    }
    Ok(Some(m))
}

/// Where an `index.json` entry goes: (repository, tag) from its name and the `--to` prefix.
fn target(name: &str, to: Option<&str>) -> Result<(RepoName, Tag), BundleError> {
    let bad = |e: String| BundleError::Invalid(format!("index.json entry {name:?}: {e}"));
    match parse_ref(name) {
        Ok((repo, oci::RefSpec::Tag(tag))) => {
            let repo = match to {
                Some(p) => format!("{}/{repo}", p.trim_end_matches('/')).parse().map_err(|e| bad(format!("{e}")))?,
                None => repo,
            };
            Ok((repo, tag))
        }
        Ok(_) => Err(bad("names a digest, not a tag".into())),
        Err(_) => {
            let tag: Tag = name.parse().map_err(|e| bad(format!("{e}")))?;
            let repo = to.ok_or_else(|| bad("names only a tag: give the repository with --to".into()))?;
            Ok((repo.parse().map_err(|e| bad(format!("{e}")))?, tag))
        }
    }
}

/// One repository's share of the import: manifests children first, and the blobs they need.
#[derive(Default)]
struct RepoWork {
    manifests: Vec<Manifest>,
    written: HashSet<Digest>,
    blobs: Vec<(Digest, u64)>,
    tags: Vec<(Tag, Manifest)>,
    /// Manifest bytes held.
    held: usize,
}

/// Add `top` and everything under it (children first) to `work`.
fn walk(path: &Path, listing: &Listing, top: Manifest, work: &mut RepoWork) -> Result<(), BundleError> {
    // Depth-first, children before parents: a stack of (manifest, children pushed?).
    let mut stack: Vec<(Manifest, bool)> = vec![(top, false)];
    let mut seen = 0usize;
    while let Some((m, expanded)) = stack.pop() {
        if work.written.contains(&m.digest) {
            continue;
        }
        if expanded {
            work.held += m.bytes.len();
            if work.held > super::MAX_MANIFEST_BYTES_HELD {
                return Err(BundleError::Invalid(format!(
                    "more than {} MiB of manifests for one repository",
                    super::MAX_MANIFEST_BYTES_HELD >> 20
                )));
            }
            work.written.insert(m.digest.clone());
            work.manifests.push(m);
            continue;
        }
        seen += 1;
        if seen > MAX_TREE_MANIFESTS {
            return Err(BundleError::Invalid(format!("more than {MAX_TREE_MANIFESTS} manifests under one image")));
        }
        let children: Vec<Manifest> = match &m.body {
            ManifestBody::Index(ix) => {
                let mut out = Vec::new();
                for c in &ix.manifests {
                    // A child left out (a platform subset) is fine when the destination does not need it.
                    if let Some(cm) = manifest_at(path, listing, c)? {
                        out.push(cm);
                    }
                }
                out
            }
            ManifestBody::Image(img) => {
                for b in std::iter::once(&img.config).chain(&img.layers) {
                    if b.urls.is_empty() {
                        work.blobs.push((b.digest.clone(), b.size));
                    }
                }
                Vec::new()
            }
        };
        stack.push((m, true));
        stack.extend(children.into_iter().map(|c| (c, false)));
    }
    Ok(())
}

/// Import the bundle at `path` into `dest`; `pins` is the local store, whose received manifests are pinned
/// by `bundle:<file name>`.
pub async fn import(
    path: &Path,
    dest: Destination,
    pins: Option<Arc<dyn ContentStore>>,
    opts: ImportOptions,
) -> Result<ImportReport, BundleError> {
    let force = opts.force;
    let p = path.to_owned();
    let (listing, work) = tokio::task::spawn_blocking(move || plan(&p, &opts))
        .await
        .map_err(|e| BundleError::Source(format!("import task: {e}")))??;
    let mut report = ImportReport::default();
    // Tags that would move are refused before anything is written.
    for (repo, w) in &work {
        for (tag, m) in &w.tags {
            match dest.tag_get(repo, tag).await? {
                Some(current) if current != m.digest && !force => {
                    return Err(BundleError::TagExists(format!(
                        "{repo}:{tag} points at {current}, the bundle has {}; --force moves it",
                        m.digest
                    )))
                }
                _ => {}
            }
        }
    }
    // Blobs first, each once per repository; one missing from both the bundle and the destination stops
    // the import before any manifest is written. Two blobs stream at once, so one's final sync overlaps the
    // other's reads, hashing and writes.
    let mut missing = Vec::new();
    let mut jobs: Vec<(RepoName, Digest, u64, u64)> = Vec::new();
    let mut again: Vec<(RepoName, Digest, u64, u64)> = Vec::new();
    let mut scheduled: HashSet<Digest> = HashSet::new();
    for (repo, w) in &work {
        let mut done = HashSet::new();
        for (d, size) in &w.blobs {
            if !done.insert(d.clone()) {
                continue;
            }
            if dest.has_blob(repo, d).await? {
                report.blobs_present += 1;
                continue;
            }
            let Some(&(offset, len)) = listing.get(&blob_path(d)) else {
                missing.push(format!("{repo}: {d}"));
                continue;
            };
            if len != *size {
                return Err(BundleError::Invalid(format!(
                    "blob {d}: {len} bytes in the bundle, {size} in its manifest"
                )));
            }
            let job = (repo.clone(), d.clone(), offset, len);
            // Another repository's copy goes first; this one is linked (or pushed again) after it.
            if scheduled.insert(d.clone()) {
                jobs.push(job);
            } else {
                again.push(job);
            }
        }
    }
    if !missing.is_empty() {
        return Err(BundleError::Invalid(format!(
            "the bundle lacks {} blob(s) the destination does not have either: {}",
            missing.len(),
            missing.join(", ")
        )));
    }
    let put = |(repo, d, offset, len): (RepoName, Digest, u64, u64)| {
        let dest = &dest;
        async move {
            dest.put_blob(&repo, &d, len, read_range(path, offset, len))
                .await
                .map_err(|e| BundleError::Invalid(format!("blob {d} for {repo}: {e}")))?;
            Ok::<u64, BundleError>(len)
        }
    };
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let written: Vec<u64> = futures_util::stream::iter(jobs).map(put).buffer_unordered(2).try_collect().await?;
    for (repo, d, offset, len) in again {
        if dest.has_blob(&repo, &d).await? {
            report.blobs_present += 1;
        } else {
            report.bytes_written += put((repo, d, offset, len)).await?;
            report.blobs_written += 1;
        }
    }
    report.blobs_written += written.len() as u64;
    report.bytes_written += written.iter().sum::<u64>();
    let owner = format!("bundle:{}", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    for (repo, w) in &work {
        for m in &w.manifests {
            dest.put_manifest(repo, m).await?;
            report.manifests += 1;
            if let Some(store) = &pins {
                crate::history::pin(store.as_ref(), repo, &m.digest, &owner).await?;
            }
        }
        for (tag, m) in &w.tags {
            dest.tag_put(repo, tag, m).await?;
            report.images.insert(format!("{repo}:{tag}"), m.digest.to_string());
        }
    }
    Ok(report)
}

/// Bytes `offset..offset + len` of the bundle as a stream, read by a thread of its own in large chunks (one
/// `read` each, no per-chunk hand-off to the blocking pool), at most a few chunks ahead of the consumer.
fn read_range(path: &Path, offset: u64, len: u64) -> crate::stream::ByteStream {
    const CHUNK: usize = 4 << 20;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let path = path.to_owned();
    std::thread::spawn(move || {
        let run = || -> std::io::Result<()> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut left = len;
            while left > 0 {
                let want = CHUNK.min(left as usize);
                let mut buf = Vec::with_capacity(want);
                (&mut f).take(want as u64).read_to_end(&mut buf)?;
                if buf.len() < want {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the bundle ends early"));
                }
                left -= want as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the consumer stopped
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// First pass: the listing, and per repository the manifests, blobs and tags to write.
fn plan(path: &Path, opts: &ImportOptions) -> Result<(Listing, BTreeMap<RepoName, RepoWork>), BundleError> {
    let listing = list(path)?;
    if !listing.contains_key("oci-layout") {
        return Err(BundleError::Invalid(format!("{}: no oci-layout file: not an OCI image layout", path.display())));
    }
    let index = read_at(path, &listing, "index.json", MAX_INDEX_BYTES)?
        .ok_or_else(|| BundleError::Invalid(format!("{}: no index.json", path.display())))?;
    let index: oci::ImageIndex =
        serde_json::from_slice(&index).map_err(|e| BundleError::Invalid(format!("index.json: {e}")))?;
    let mut work: BTreeMap<RepoName, RepoWork> = BTreeMap::new();
    let mut repos_of: HashMap<Digest, Vec<RepoName>> = HashMap::new();
    let mut unnamed = Vec::new();
    for d in &index.manifests {
        let Some(name) = d.annotations.get(REF_NAME) else {
            unnamed.push(d.clone());
            continue;
        };
        let (repo, tag) = target(name, opts.to.as_deref())?;
        let m = manifest_at(path, &listing, d)?
            .ok_or_else(|| BundleError::Invalid(format!("{name}: manifest {} is not in the bundle", d.digest)))?;
        let w = work.entry(repo.clone()).or_default();
        let before = w.written.len();
        walk(path, &listing, m.clone(), w)?;
        for x in &w.manifests[before..] {
            repos_of.entry(x.digest.clone()).or_default().push(repo.clone());
        }
        repos_of.entry(m.digest.clone()).or_default().push(repo.clone());
        w.tags.push((tag, m));
    }
    // Unnamed entries: referrers go where their subject went (in index order, so a signature of an SBOM
    // follows the SBOM); anything else has no destination and is skipped.
    for d in unnamed {
        let Some(m) = manifest_at(path, &listing, &d)? else { continue };
        let Some(subject) = m.subject().map(|s| s.digest.clone()) else { continue };
        for repo in repos_of.get(&subject).cloned().unwrap_or_default() {
            let w = work.entry(repo.clone()).or_default();
            walk(path, &listing, m.clone(), w)?;
            repos_of.entry(m.digest.clone()).or_default().push(repo);
        }
    }
    Ok((listing, work))
}
