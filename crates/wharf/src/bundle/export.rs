//! `wharf bundle export`: walk each image (index → platforms → config and layers, then referrers), then write
//! the tar on the blocking pool, streaming every blob from the source and hashing it on the way (a blob whose
//! bytes do not match its digest stops the export). The file is written under a temporary name, synced, and
//! renamed: a bundle that exists is whole.

use std::collections::{HashSet, VecDeque};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use oci::{Descriptor, Digest, Digester, Manifest, ManifestBody, RefSpec, RepoName};

use super::{blob_path, BundleError, Inventory, InventoryImage, INVENTORY, REF_NAME};
use crate::transfer::{PlatformSpec, MAX_REFERRER_DEPTH, MAX_TREE_MANIFESTS};
use crate::verify::platforms::is_attestation_entry;
use crate::verify::Source;

/// What to export and how.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Platforms to keep from indexes (empty: all). Entries for other platforms stay in the index; their
    /// manifests are left out, as a local sync of a platform subset does.
    pub platforms: Vec<PlatformSpec>,
    /// Leave referrers (signatures, SBOMs, attestations) out.
    pub no_referrers: bool,
    /// Blobs the other side has already (an incremental bundle): not written. Manifests are always written.
    pub skip: HashSet<Digest>,
}

/// One image to export: its name in the bundle and where it is read.
#[derive(Debug, Clone)]
pub struct ExportItem {
    /// `repo:tag` in `index.json`.
    pub name: String,
    /// Repository at the source.
    pub repo: RepoName,
    /// Tag or digest at the source.
    pub reference: RefSpec,
}

enum Entry {
    /// A manifest: its bytes are held (at most 4 MiB each, at most [`MAX_TREE_MANIFESTS`] per image).
    Manifest(Bytes),
    /// A blob, streamed from the source when written.
    Blob { repo: RepoName, size: u64 },
}

/// The walk's result: every file in write order, the `index.json` entries, the inventory.
struct Plan {
    files: Vec<(Digest, Entry)>,
    index: Vec<Descriptor>,
    inventory: Inventory,
}

async fn plan(source: &Source, items: &[ExportItem], opts: &ExportOptions) -> Result<Plan, BundleError> {
    let mut plan = Plan { files: Vec::new(), index: Vec::new(), inventory: Inventory::default() };
    let mut have: HashSet<Digest> = HashSet::new();
    let mut held = 0usize;
    for item in items {
        let top = source
            .manifest_checked(&item.repo, &item.reference)
            .await?
            .ok_or_else(|| BundleError::NotFound(format!("{}:{}", item.repo, item.reference)))?;
        let mut image = InventoryImage {
            name: item.name.clone(),
            digest: top.digest.to_string(),
            media_type: top.media_type.to_string(),
            ..InventoryImage::default()
        };
        let mut desc = top.descriptor();
        desc.annotations.insert(REF_NAME.into(), item.name.clone());
        desc.artifact_type = None;
        plan.index.push(desc);
        let mut queue: VecDeque<(Manifest, u32)> = VecDeque::from([(top, 0)]);
        let mut walked = 0usize;
        while let Some((m, depth)) = queue.pop_front() {
            walked += 1;
            if walked > MAX_TREE_MANIFESTS {
                return Err(BundleError::Invalid(format!("{}: more than {MAX_TREE_MANIFESTS} manifests", item.name)));
            }
            if depth > 0 && m.subject().is_some() {
                image.referrers += 1;
                let mut d = m.descriptor();
                d.annotations.clear();
                plan.index.push(d);
            }
            match &m.body {
                ManifestBody::Index(ix) => {
                    for child in &ix.manifests {
                        let wanted = opts.platforms.is_empty()
                            || is_attestation_entry(child)
                            || child.platform.as_ref().is_some_and(|p| opts.platforms.iter().any(|s| s.matches(p)));
                        if !wanted || have.contains(&child.digest) {
                            continue;
                        }
                        if let (Some(p), false) = (&child.platform, is_attestation_entry(child)) {
                            if depth == 0 {
                                image.platforms.push(p.to_string());
                            }
                        }
                        let c = source
                            .manifest_checked(&item.repo, &RefSpec::Digest(child.digest.clone()))
                            .await?
                            .ok_or_else(|| BundleError::NotFound(format!("{}@{}", item.repo, child.digest)))?;
                        queue.push_back((c, depth));
                    }
                }
                ManifestBody::Image(img) => {
                    for b in std::iter::once(&img.config).chain(&img.layers) {
                        // Foreign layers (with `urls`) are fetched from elsewhere by clients; not carried.
                        if b.urls.is_empty() && have.insert(b.digest.clone()) {
                            if opts.skip.contains(&b.digest) {
                                plan.inventory.omitted_blobs += 1;
                                continue;
                            }
                            plan.files.push((b.digest.clone(), Entry::Blob { repo: item.repo.clone(), size: b.size }));
                            plan.inventory.bytes += b.size;
                        }
                    }
                }
            }
            if !opts.no_referrers && depth < MAX_REFERRER_DEPTH {
                for r in source.referrers(&item.repo, &m.digest).await? {
                    if have.contains(&r.digest) {
                        continue;
                    }
                    if let Some(rm) = source.manifest_checked(&item.repo, &RefSpec::Digest(r.digest.clone())).await? {
                        queue.push_back((rm, depth + 1));
                    }
                }
            }
            if have.insert(m.digest.clone()) {
                held += m.bytes.len();
                if held > super::MAX_MANIFEST_BYTES_HELD {
                    return Err(BundleError::Invalid(format!(
                        "more than {} MiB of manifests in one bundle: export fewer images at once",
                        super::MAX_MANIFEST_BYTES_HELD >> 20
                    )));
                }
                plan.inventory.bytes += m.bytes.len() as u64;
                plan.files.push((m.digest.clone(), Entry::Manifest(m.bytes.clone())));
            }
        }
        plan.inventory.images.push(image);
    }
    plan.inventory.version = 1;
    plan.inventory.created = crate::history::now_secs();
    plan.inventory.blobs = plan.files.len() as u64;
    Ok(plan)
}

/// The blobs a previous bundle carried (the other side imported it): every `blobs/` entry of its tar.
pub fn carried_by(previous: &Path) -> Result<HashSet<Digest>, BundleError> {
    let io = |e: std::io::Error| BundleError::Io { path: previous.display().to_string(), source: e };
    let mut archive = tar::Archive::new(std::fs::File::open(previous).map_err(io)?);
    let mut out = HashSet::new();
    for entry in archive.entries_with_seek().map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.to_string_lossy().trim_start_matches("./").to_owned();
        if let Some(rest) = path.strip_prefix("blobs/") {
            if let Ok(d) = rest.replacen('/', ":", 1).parse::<Digest>() {
                out.insert(d);
            }
        }
    }
    Ok(out)
}

/// The blobs of images the other side holds, given its lock file's digests (looked up in `source`).
pub async fn held_by(source: &Source, images: &[(RepoName, Digest)]) -> Result<HashSet<Digest>, BundleError> {
    let mut out = HashSet::new();
    for (repo, digest) in images {
        let mut queue = vec![RefSpec::Digest(digest.clone())];
        while let Some(r) = queue.pop() {
            // Content the source no longer has cannot be skipped; it is simply not known to be held.
            let Some(m) = source.manifest_checked(repo, &r).await? else { continue };
            match &m.body {
                ManifestBody::Index(ix) => queue.extend(ix.manifests.iter().map(|c| RefSpec::Digest(c.digest.clone()))),
                ManifestBody::Image(img) => {
                    out.extend(std::iter::once(&img.config).chain(&img.layers).map(|b| b.digest.clone()))
                }
            }
        }
    }
    Ok(out)
}

/// Work for the hashing thread: hashing runs beside the reads and writes instead of between them. The
/// bundle is only renamed into place after every blob's digest checked out.
enum Hash {
    Start(Digest, u64, String),
    Chunk(Bytes),
    End,
}

/// The hashing thread: checks each blob against its digest and size; returns the first mismatch.
fn hasher(rx: std::sync::mpsc::Receiver<Hash>) -> Option<String> {
    let mut current: Option<(Digest, u64, String, Digester)> = None;
    let mut first_bad = None;
    while let Ok(msg) = rx.recv() {
        match msg {
            Hash::Start(d, size, what) => {
                let digester = Digester::new(d.algorithm());
                current = Some((d, size, what, digester));
            }
            Hash::Chunk(b) => {
                if let Some((_, _, _, h)) = current.as_mut() {
                    h.update(&b);
                }
            }
            Hash::End => {
                if let Some((d, size, what, h)) = current.take() {
                    let (n, got) = (h.len(), h.finish());
                    if (n != size || got != d) && first_bad.is_none() {
                        first_bad =
                            Some(format!("blob {d} of {what}: read {n} bytes hashing to {got}, expected {size} bytes"));
                    }
                }
            }
        }
    }
    first_bad
}

/// A blocking reader over a blob's stream that hands every chunk (a reference, not a copy) to the hasher.
struct Teed<'a> {
    handle: &'a tokio::runtime::Handle,
    body: crate::stream::ByteStream,
    current: Bytes,
    hash: &'a std::sync::mpsc::SyncSender<Hash>,
}

impl Read for Teed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use futures_util::StreamExt;
        while self.current.is_empty() {
            match self.handle.block_on(self.body.next()) {
                Some(Ok(chunk)) => {
                    // The hasher gone means the export is failing anyway; the write reports it.
                    let _ = self.hash.send(Hash::Chunk(chunk.clone()));
                    self.current = chunk;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn write_tar(source: &Source, plan: &Plan, path: &Path) -> Result<(), BundleError> {
    let io = |e: std::io::Error| BundleError::Io { path: path.display().to_string(), source: e };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let small = |tar: &mut tar::Builder<BufWriter<std::fs::File>>, name: &str, bytes: &[u8]| {
        tar.append_data(&mut header(bytes.len() as u64), name, bytes)
    };
    small(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
    let handle = tokio::runtime::Handle::current();
    // At most this many chunks wait for the hasher (bounded memory when hashing is slower than the disk).
    let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Hash>(64);
    let hashing = std::thread::spawn(move || hasher(hash_rx));
    for (digest, entry) in &plan.files {
        match entry {
            Entry::Manifest(bytes) => small(&mut tar, &blob_path(digest), bytes).map_err(io)?,
            Entry::Blob { repo, size } => {
                let body = handle
                    .block_on(source.blob_stream(repo, digest))?
                    .ok_or_else(|| BundleError::NotFound(format!("blob {digest} of {repo}")))?;
                let _ = hash_tx.send(Hash::Start(digest.clone(), *size, repo.to_string()));
                let mut reader = Teed { handle: &handle, body, current: Bytes::new(), hash: &hash_tx }.take(*size);
                tar.append_data(&mut header(*size), blob_path(digest), &mut reader).map_err(io)?;
                // A short body leaves the entry short: the hasher reports it, and the tar is never kept.
                let _ = hash_tx.send(Hash::End);
            }
        }
    }
    drop(hash_tx);
    if let Some(bad) = hashing.join().map_err(|_| BundleError::Source("the hashing thread panicked".into()))? {
        return Err(BundleError::Invalid(bad));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": plan.index,
    });
    small(&mut tar, "index.json", &serde_json::to_vec(&index).expect("index serialises")).map_err(io)?;
    small(&mut tar, INVENTORY, &serde_json::to_vec_pretty(&plan.inventory).expect("inventory serialises"))
        .map_err(io)?;
    let mut out = tar.into_inner().map_err(io)?;
    out.flush().map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Export `items` from `source` to `out` (written whole or not at all); returns what it holds.
pub async fn export(
    source: Source,
    items: Vec<ExportItem>,
    opts: ExportOptions,
    out: &Path,
) -> Result<Inventory, BundleError> {
    let plan = plan(&source, &items, &opts).await?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
    let tmp: PathBuf = out.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let (tmp2, out2) = (tmp.clone(), out.to_owned());
    let written = tokio::task::spawn_blocking(move || {
        write_tar(&source, &plan, &tmp2)?;
        std::fs::rename(&tmp2, &out2).map_err(|e| BundleError::Io { path: out2.display().to_string(), source: e })?;
        if let Some(dir) = out2.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok::<_, BundleError>(plan.inventory)
    })
    .await
    .map_err(|e| BundleError::Source(format!("export task: {e}")))?;
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
