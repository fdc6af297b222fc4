//! `wharf verify`: is an image complete and consistent, here or on any registry?
//!
//! One walk over a [`Source`] (the local [`ContentStore`] or a remote registry through the shared [`Upstream`]
//! client): the manifest, for an index every child manifest (with its size and digest), each child config's
//! platform against its index entry, every config and layer blob present with the descriptor's size, and with
//! `deep` every blob re-hashed (streaming, several blobs at once on the blocking pool). Buildx attestation
//! manifests inside an index count as attestations of the platform they describe, not as platforms; referrers
//! (the referrers API, or the store's referrer entries) are listed per platform. Each defect is one typed
//! [`Problem`] with a one-line `Display`, reported once per image even when several platforms share a blob.
//!
//! May import: `store` (the trait), `upstream`, `transfer` (platform specs), `oci`. Must not import `api`,
//! `service`, `app`, `cli`, `mirror` or `sync`.

pub mod platforms;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use oci::{Descriptor, Digest, Digester, Manifest, ManifestBody, MediaType, Platform, RefSpec, RepoName, Tag};
use serde::Serialize;

pub use self::platforms::missing_platforms;
use self::platforms::{config_agrees, is_attestation_entry, missing_from, DOCKER_REFERENCE_DIGEST};
use crate::store::{ContentStore, StoreError};
use crate::transfer::PlatformSpec;
use crate::upstream::{Upstream, UpstreamError};

/// Largest image config read for the platform check.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

/// Deepest index nesting walked (indexes of indexes); deeper entries are reported, not followed.
const MAX_DEPTH: usize = 8;

/// Bytes gathered before a piece is handed to a hashing thread (network chunks are small).
const HASH_PIECE: usize = 1024 * 1024;

/// What stops a verification: the source itself failed (not a defect of the image).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The remote registry failed (unreachable, refused, invalid answers).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The repository has no tags (or does not exist).
    #[error("repository {0} has no tags")]
    NoTags(String),
    /// A hashing task failed.
    #[error("hashing task failed: {0}")]
    Task(String),
    /// Content read for a copy (`wharf bundle export`) is not what its digest says.
    #[error("{0}")]
    Content(String),
}

/// Where the content is read from.
#[derive(Clone)]
pub enum Source {
    /// The local content store.
    Store(Arc<dyn ContentStore>),
    /// Any registry over HTTP, through the outbound client.
    Remote(Arc<Upstream>),
}

/// A manifest as fetched for verification (one at a time, so the size of `Found` does not matter).
#[allow(clippy::large_enum_variant)]
enum Fetched {
    Found(Manifest),
    Missing,
    /// The bytes stored or served under `digest` hash to `actual`.
    WrongDigest {
        digest: Digest,
        actual: Digest,
    },
    /// The bytes under `digest` are not a manifest.
    Invalid {
        digest: Digest,
        reason: String,
    },
}

impl Source {
    async fn manifest(&self, repo: &RepoName, reference: &RefSpec) -> Result<Fetched, VerifyError> {
        match self {
            Source::Store(store) => {
                let digest = match reference {
                    RefSpec::Digest(d) => d.clone(),
                    RefSpec::Tag(t) => match store.tag_get(repo, t).await? {
                        Some(d) => d,
                        None => return Ok(Fetched::Missing),
                    },
                };
                let Some(stored) = store.manifest_get(repo, &digest).await? else { return Ok(Fetched::Missing) };
                match Manifest::parse(stored.bytes, Some(&stored.media_type), digest.algorithm()) {
                    Ok(m) if m.digest == digest => Ok(Fetched::Found(m)),
                    Ok(m) => Ok(Fetched::WrongDigest { digest, actual: m.digest }),
                    Err(e) => Ok(Fetched::Invalid { digest, reason: e.to_string() }),
                }
            }
            Source::Remote(up) => match up.get_manifest(repo, reference).await {
                Ok(m) => Ok(Fetched::Found(m)),
                Err(UpstreamError::NotFound) => Ok(Fetched::Missing),
                Err(UpstreamError::DigestMismatch { expected, actual }) => {
                    Ok(Fetched::WrongDigest { digest: expected, actual })
                }
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A manifest checked against its digest, `None` when it is absent; wrong or unparsable bytes are errors.
    pub(crate) async fn manifest_checked(
        &self,
        repo: &RepoName,
        reference: &RefSpec,
    ) -> Result<Option<Manifest>, VerifyError> {
        match self.manifest(repo, reference).await? {
            Fetched::Found(m) => Ok(Some(m)),
            Fetched::Missing => Ok(None),
            Fetched::WrongDigest { digest, actual } => {
                Err(VerifyError::Content(format!("{repo}@{digest}: the bytes hash to {actual}")))
            }
            Fetched::Invalid { digest, reason } => {
                Err(VerifyError::Content(format!("{repo}@{digest}: not a manifest: {reason}")))
            }
        }
    }

    /// The blob's size, `None` when it is absent.
    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, VerifyError> {
        match self {
            Source::Store(store) => Ok(store.blob_stat(digest).await?.map(|m| m.size)),
            Source::Remote(up) => Ok(up.head_blob(repo, digest).await?),
        }
    }

    /// The blob's stream, `None` when it is absent.
    pub(crate) async fn blob_stream(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<crate::stream::ByteStream>, VerifyError> {
        match self {
            Source::Store(store) => Ok(store.blob_open(digest, None).await?.map(|r| r.body)),
            Source::Remote(up) => match up.get_blob(repo, digest).await {
                Ok(r) => Ok(Some(r.body)),
                Err(UpstreamError::NotFound) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A small blob's bytes (a config), at most `limit`; `Err(reason)` inside when it is larger or unreadable.
    async fn blob_bytes(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Option<Result<Bytes, String>>, VerifyError> {
        let Some(mut body) = self.blob_stream(repo, digest).await? else { return Ok(None) };
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) if buf.len() + c.len() > limit => return Ok(Some(Err(format!("larger than {limit} bytes")))),
                Ok(c) => buf.extend_from_slice(&c),
                Err(e) => return Ok(Some(Err(e.to_string()))),
            }
        }
        Ok(Some(Ok(buf.freeze())))
    }

    /// Referrers of a manifest. A remote registry's failure here is not a defect of the image: nothing is
    /// listed then.
    pub(crate) async fn referrers(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Descriptor>, VerifyError> {
        match self {
            Source::Store(store) => Ok(store.referrers(repo, digest).await?),
            Source::Remote(up) => match up.referrers(repo, digest).await {
                Ok(r) => Ok(r),
                Err(e) => {
                    tracing::warn!(%repo, %digest, error = %e, "referrers not listed");
                    Ok(Vec::new())
                }
            },
        }
    }

    /// Every tag of a repository, sorted.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<Tag>, VerifyError> {
        let tags = match self {
            Source::Store(store) => {
                let mut out: Vec<Tag> = Vec::new();
                loop {
                    let after = out.last().map(|t| t.as_str().to_owned());
                    let page = store.tag_list(repo, after.as_deref(), 1000).await?.unwrap_or_default();
                    let n = page.len();
                    out.extend(page);
                    if n < 1000 {
                        break out;
                    }
                }
            }
            Source::Remote(up) => match up.list_tags(repo).await {
                Ok(t) => t.iter().filter_map(|t| t.parse().ok()).collect(),
                Err(UpstreamError::NotFound) => Vec::new(),
                Err(e) => return Err(e.into()),
            },
        };
        if tags.is_empty() {
            return Err(VerifyError::NoTags(repo.to_string()));
        }
        Ok(tags)
    }

    /// Every repository of the local store (nothing for a remote registry).
    pub async fn repos(&self) -> Result<Vec<RepoName>, VerifyError> {
        let Source::Store(store) = self else { return Ok(Vec::new()) };
        let mut out: Vec<RepoName> = Vec::new();
        loop {
            let after = out.last().map(|r| r.as_str().to_owned());
            let page = store.repo_list(after.as_deref(), 1000).await?;
            let n = page.len();
            out.extend(page);
            if n < 1000 {
                return Ok(out);
            }
        }
    }
}

/// What kind of blob a descriptor points at (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// An image config.
    Config,
    /// A layer.
    Layer,
    /// A non-manifest entry of an index.
    Blob,
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
            BlobKind::Blob => "blob",
        })
    }
}

/// One defect of an image. `Display` is the one line the CLI prints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The reference itself resolves to nothing.
    NotFound {
        /// `repo:tag` or `repo@digest`.
        reference: String,
    },
    /// A manifest an index lists is absent.
    MissingManifest {
        /// Its digest.
        digest: Digest,
        /// Which entry (`linux/s390x`, `attestation of linux/amd64`).
        of: String,
    },
    /// A manifest's bytes hash to another digest.
    ManifestDigest {
        /// The digest it is stored or listed under.
        digest: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A manifest's size differs from its index entry's.
    ManifestSize {
        /// Its digest.
        digest: Digest,
        /// Bytes stored.
        actual: u64,
        /// What the index entry says.
        declared: u64,
    },
    /// Bytes that are not a manifest.
    InvalidManifest {
        /// Its digest.
        digest: Digest,
        /// The parse error.
        reason: String,
    },
    /// A child's config names another platform than its index entry.
    PlatformMismatch {
        /// The index entry's platform.
        platform: String,
        /// What the config says.
        config: String,
    },
    /// The index entry's `os.version` differs from the config's.
    OsVersionMismatch {
        /// The index entry's platform.
        platform: String,
        /// The index entry's `os.version`.
        declared: String,
        /// The config's (`None`: absent).
        config: Option<String>,
    },
    /// A config that cannot be read as an image config.
    InvalidConfig {
        /// Its digest.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// A config or layer is absent.
    MissingBlob {
        /// Its digest.
        digest: Digest,
        /// Config, layer or blob.
        blob: BlobKind,
        /// The platforms (or manifests) that use it, `, `-separated.
        of: String,
    },
    /// A blob's size differs from its descriptor's.
    BlobSize {
        /// Its digest.
        digest: Digest,
        /// Config, layer or blob.
        blob: BlobKind,
        /// Bytes stored.
        actual: u64,
        /// What the descriptor says.
        declared: u64,
    },
    /// A blob's bytes hash to another digest (`--deep`).
    BlobDigest {
        /// The digest it is stored under.
        digest: Digest,
        /// Config, layer or blob.
        blob: BlobKind,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A required platform is not in the index.
    MissingPlatform {
        /// `os/arch[/variant]`.
        platform: String,
    },
    /// Indexes nested deeper than Wharf follows.
    TooDeep {
        /// The manifest not followed.
        digest: Digest,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotFound { reference } => write!(f, "{reference}: not found"),
            Problem::MissingManifest { digest, of } => write!(f, "missing child manifest {digest} ({of})"),
            Problem::ManifestDigest { digest, actual } => write!(f, "{digest}: manifest bytes hash to {actual}"),
            Problem::ManifestSize { digest, actual, declared } => {
                write!(f, "{digest}: manifest size {actual}, descriptor says {declared}")
            }
            Problem::InvalidManifest { digest, reason } => write!(f, "{digest}: not a valid manifest: {reason}"),
            Problem::PlatformMismatch { platform, config } => write!(f, "{platform}: config says {config}"),
            Problem::OsVersionMismatch { platform, declared, config } => write!(
                f,
                "{platform}: index says os.version {declared}, config says {}",
                config.as_deref().unwrap_or("none")
            ),
            Problem::InvalidConfig { digest, reason } => write!(f, "{digest}: config unreadable: {reason}"),
            Problem::MissingBlob { digest, blob, of } => write!(f, "missing {blob} {digest} ({of})"),
            Problem::BlobSize { digest, blob, actual, declared } => {
                write!(f, "{digest}: {blob} size {actual}, descriptor says {declared}")
            }
            Problem::BlobDigest { digest, blob, actual } => write!(f, "{digest}: {blob} content hashes to {actual}"),
            Problem::MissingPlatform { platform } => write!(f, "required platform {platform} is missing"),
            Problem::TooDeep { digest } => write!(f, "{digest}: indexes nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// A referrer or attestation of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attached {
    /// The referrer manifest.
    pub digest: Digest,
    /// Its artifact type, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `referrers` (the referrers API / store entries) or `index` (a buildx attestation manifest).
    pub source: &'static str,
}

/// One platform of an image.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlatformReport {
    /// `os/arch[/variant]` (`unknown` without a platform).
    pub platform: String,
    /// The platform's manifest.
    pub digest: String,
    /// Attestations (buildx attestation manifests, in-toto/SBOM referrers).
    pub attestations: Vec<Attached>,
    /// Signatures (cosign, notation referrers).
    pub signatures: Vec<Attached>,
}

/// The verdict on one image reference.
#[derive(Clone, Debug, Serialize)]
pub struct ImageReport {
    /// `repo:tag` or `repo@digest`.
    pub reference: String,
    /// What the reference resolved to.
    pub digest: Option<Digest>,
    /// The top manifest's media type.
    pub media_type: Option<String>,
    /// True when there is no problem.
    pub ok: bool,
    /// Platforms (one entry for a single-platform image).
    pub platforms: Vec<PlatformReport>,
    /// Attestations of the top manifest (an index) itself.
    pub attestations: Vec<Attached>,
    /// Signatures of the top manifest itself.
    pub signatures: Vec<Attached>,
    /// Blobs checked, and their bytes (by descriptor).
    pub blobs: usize,
    /// Sum of the checked blobs' sizes.
    pub bytes: u64,
    /// Every defect, each once.
    #[serde(serialize_with = "problems_with_messages")]
    pub problems: Vec<Problem>,
}

fn problems_with_messages<S: serde::Serializer>(problems: &[Problem], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Entry<'a> {
        message: String,
        #[serde(flatten)]
        problem: &'a Problem,
    }
    s.collect_seq(problems.iter().map(|p| Entry { message: p.to_string(), problem: p }))
}

/// Several images' verdicts: the JSON of `wharf verify --json` and `GET /_wharf/verify/...`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// True when no image has a problem.
    pub ok: bool,
    /// One per reference verified.
    pub images: Vec<ImageReport>,
}

impl Report {
    /// Wrap the verdicts.
    pub fn new(images: Vec<ImageReport>) -> Report {
        Report { ok: images.iter().all(|i| i.ok), images }
    }
}

/// How thorough to be.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Re-hash every blob against its digest.
    pub deep: bool,
    /// Platforms the image must offer.
    pub required: Vec<PlatformSpec>,
    /// Blobs hashed at once (`0`: one per core).
    pub parallelism: usize,
}

/// One use of a blob by a manifest, gathered during the walk and checked once per digest.
struct BlobUse {
    digest: Digest,
    kind: BlobKind,
    declared: u64,
    users: Vec<String>,
}

/// The per-image walk state.
#[derive(Default)]
struct Walk {
    problems: Vec<Problem>,
    seen_problems: HashSet<Problem>,
    /// Manifests already walked in this image.
    manifests: HashSet<Digest>,
    /// Blob uses by (digest, declared size), in first-seen order.
    blobs: Vec<BlobUse>,
    blob_index: HashMap<(Digest, u64), usize>,
    /// Platforms offered (for `required`).
    offered: Vec<Platform>,
    platforms: Vec<PlatformReport>,
    /// Buildx attestation manifests: (described digest, attestation digest).
    index_attestations: Vec<(Digest, Descriptor)>,
}

impl Walk {
    fn problem(&mut self, p: Problem) {
        if self.seen_problems.insert(p.clone()) {
            self.problems.push(p);
        }
    }

    fn use_blob(&mut self, d: &Descriptor, kind: BlobKind, user: &str) {
        let key = (d.digest.clone(), d.size);
        match self.blob_index.get(&key) {
            Some(&i) => {
                let u = &mut self.blobs[i];
                if !u.users.iter().any(|x| x == user) {
                    u.users.push(user.to_owned());
                }
            }
            None => {
                self.blob_index.insert(key, self.blobs.len());
                self.blobs.push(BlobUse {
                    digest: d.digest.clone(),
                    kind,
                    declared: d.size,
                    users: vec![user.to_owned()],
                });
            }
        }
    }
}

/// What a blob turned out to be (cached per digest across the images of one run).
#[derive(Clone, Debug)]
enum BlobState {
    Missing,
    /// Size (and, when hashed, what the bytes hash to).
    Present(u64, Option<Digest>),
}

/// Verifies images from one source; caches blob results across the images of a run (`--all`), so a blob
/// shared by many images is read and hashed once.
pub struct Verifier {
    source: Source,
    options: Options,
    blobs: Mutex<HashMap<Digest, BlobState>>,
    configs: Mutex<HashMap<Digest, Result<Platform, String>>>,
    /// Blobs being hashed at once, across every image of the run (one per core): bounds CPU and memory.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Blob checks (and images) in flight at once.
    parallel: usize,
}

impl Verifier {
    /// A verifier over `source`.
    pub fn new(source: Source, options: Options) -> Verifier {
        let cores = match options.parallelism {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        // Remote requests wait on the network, not the CPU: keep more in flight.
        let parallel = if matches!(source, Source::Remote(_)) { cores.max(8) } else { cores };
        Verifier {
            source,
            options,
            blobs: Mutex::default(),
            configs: Mutex::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(cores)),
            parallel,
        }
    }

    /// The source read from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Verify one image reference.
    pub async fn verify(&self, repo: &RepoName, reference: &RefSpec) -> Result<ImageReport, VerifyError> {
        let name = match reference {
            RefSpec::Tag(t) => format!("{repo}:{t}"),
            RefSpec::Digest(d) => format!("{repo}@{d}"),
        };
        let mut report = ImageReport {
            reference: name.clone(),
            digest: None,
            media_type: None,
            ok: false,
            platforms: Vec::new(),
            attestations: Vec::new(),
            signatures: Vec::new(),
            blobs: 0,
            bytes: 0,
            problems: Vec::new(),
        };
        let mut walk = Walk::default();
        let top = match self.source.manifest(repo, reference).await? {
            Fetched::Found(m) => m,
            Fetched::Missing => {
                walk.problem(Problem::NotFound { reference: name });
                return Ok(finish(report, walk));
            }
            Fetched::WrongDigest { digest, actual } => {
                report.digest = Some(digest.clone());
                walk.problem(Problem::ManifestDigest { digest, actual });
                return Ok(finish(report, walk));
            }
            Fetched::Invalid { digest, reason } => {
                report.digest = Some(digest.clone());
                walk.problem(Problem::InvalidManifest { digest, reason });
                return Ok(finish(report, walk));
            }
        };
        report.digest = Some(top.digest.clone());
        report.media_type = Some(top.media_type.to_string());
        walk.manifests.insert(top.digest.clone());
        self.walk_manifest(repo, &top, None, "image", 0, &mut walk).await?;

        // Buildx attestation manifests become attestations of the platform they describe.
        for (subject, att) in std::mem::take(&mut walk.index_attestations) {
            let a = Attached {
                digest: att.digest.clone(),
                artifact_type: Some("attestation-manifest".into()),
                source: "index",
            };
            match walk.platforms.iter_mut().find(|p| p.digest == subject.to_string()) {
                Some(p) => p.attestations.push(a),
                None => report.attestations.push(a),
            }
        }
        // Referrers of each platform and of the top manifest.
        for p in &mut walk.platforms {
            let Ok(d) = p.digest.parse::<Digest>() else { continue };
            for r in self.source.referrers(repo, &d).await? {
                file_referrer(r, &mut p.attestations, &mut p.signatures);
            }
        }
        if top.media_type.is_index() {
            for r in self.source.referrers(repo, &top.digest).await? {
                file_referrer(r, &mut report.attestations, &mut report.signatures);
            }
        }
        if !self.options.required.is_empty() {
            let offered: Vec<&Platform> = walk.offered.iter().collect();
            for platform in missing_from(&offered, &self.options.required) {
                walk.problem(Problem::MissingPlatform { platform });
            }
        }
        self.check_blobs(repo, &mut walk, &mut report).await?;
        report.platforms = std::mem::take(&mut walk.platforms);
        Ok(finish(report, walk))
    }

    /// Walk one manifest: an index's children (recursively), an image's config and layers. `entry` is the
    /// index entry that listed it (its platform is what the config must say).
    async fn walk_manifest(
        &self,
        repo: &RepoName,
        m: &Manifest,
        entry: Option<&Descriptor>,
        label: &str,
        depth: usize,
        walk: &mut Walk,
    ) -> Result<(), VerifyError> {
        match &m.body {
            ManifestBody::Index(index) => {
                if depth >= MAX_DEPTH {
                    walk.problem(Problem::TooDeep { digest: m.digest.clone() });
                    return Ok(());
                }
                for child in &index.manifests {
                    let attestation = is_attestation_entry(child);
                    let label = if attestation {
                        let of = child.annotations.get(DOCKER_REFERENCE_DIGEST).and_then(|d| d.parse::<Digest>().ok());
                        if let Some(of) = &of {
                            walk.index_attestations.push((of.clone(), child.clone()));
                        }
                        let platform = of
                            .and_then(|of| index.manifests.iter().find(|e| e.digest == of))
                            .map_or_else(|| "unknown".to_owned(), |e| platform_name(e.platform.as_ref()));
                        format!("attestation of {platform}")
                    } else {
                        platform_name(child.platform.as_ref())
                    };
                    if !child.media_type.is_manifest() {
                        walk.use_blob(child, BlobKind::Blob, &label);
                        continue;
                    }
                    if !attestation {
                        if let Some(p) = &child.platform {
                            walk.offered.push(p.clone());
                        }
                        walk.platforms.push(PlatformReport {
                            platform: label.clone(),
                            digest: child.digest.to_string(),
                            ..Default::default()
                        });
                    }
                    if !walk.manifests.insert(child.digest.clone()) {
                        continue;
                    }
                    match self.source.manifest(repo, &RefSpec::Digest(child.digest.clone())).await? {
                        Fetched::Missing => {
                            walk.problem(Problem::MissingManifest { digest: child.digest.clone(), of: label })
                        }
                        Fetched::WrongDigest { digest, actual } => {
                            walk.problem(Problem::ManifestDigest { digest, actual })
                        }
                        Fetched::Invalid { digest, reason } => {
                            walk.problem(Problem::InvalidManifest { digest, reason })
                        }
                        Fetched::Found(cm) => {
                            if cm.bytes.len() as u64 != child.size {
                                walk.problem(Problem::ManifestSize {
                                    digest: child.digest.clone(),
                                    actual: cm.bytes.len() as u64,
                                    declared: child.size,
                                });
                            }
                            let entry = (!attestation).then_some(child);
                            Box::pin(self.walk_manifest(repo, &cm, entry, &label, depth + 1, walk)).await?;
                        }
                    }
                }
            }
            ManifestBody::Image(image) => {
                walk.use_blob(&image.config, BlobKind::Config, label);
                for l in &image.layers {
                    if l.media_type.is_non_distributable() && !l.urls.is_empty() {
                        continue; // may legally live elsewhere (its urls say where)
                    }
                    walk.use_blob(l, BlobKind::Layer, label);
                }
                let is_image_config = matches!(image.config.media_type, MediaType::OciConfig | MediaType::DockerConfig);
                if !is_image_config {
                    return Ok(());
                }
                let Some(config) = self.config_platform(repo, &image.config.digest).await? else { return Ok(()) };
                let config = match config {
                    Ok(c) => c,
                    Err(reason) => {
                        walk.problem(Problem::InvalidConfig { digest: image.config.digest.clone(), reason });
                        return Ok(());
                    }
                };
                match entry.and_then(|e| e.platform.as_ref()) {
                    Some(declared) => {
                        if !config_agrees(&Platform { os_version: None, ..declared.clone() }, &config) {
                            walk.problem(Problem::PlatformMismatch {
                                platform: declared.to_string(),
                                config: config.to_string(),
                            });
                        } else if !config_agrees(declared, &config) {
                            walk.problem(Problem::OsVersionMismatch {
                                platform: declared.to_string(),
                                declared: declared.os_version.clone().unwrap_or_default(),
                                config: config.os_version.clone(),
                            });
                        }
                    }
                    None if depth == 0 => {
                        // A single-platform image: its config names the platform.
                        walk.offered.push(config.clone());
                        walk.platforms.push(PlatformReport {
                            platform: config.to_string(),
                            digest: m.digest.to_string(),
                            ..Default::default()
                        });
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// The platform a config names: `None` when the config is absent (reported by the blob check).
    async fn config_platform(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Result<Platform, String>>, VerifyError> {
        if let Some(c) = self.configs.lock().expect("config cache").get(digest) {
            return Ok(Some(c.clone()));
        }
        let Some(bytes) = self.source.blob_bytes(repo, digest, MAX_CONFIG_BYTES).await? else { return Ok(None) };
        let parsed = bytes.and_then(|b| parse_config_platform(&b));
        self.configs.lock().expect("config cache").insert(digest.clone(), parsed.clone());
        Ok(Some(parsed))
    }

    /// Check every gathered blob once: present, the descriptor's size, and with `deep` its digest.
    async fn check_blobs(&self, repo: &RepoName, walk: &mut Walk, report: &mut ImageReport) -> Result<(), VerifyError> {
        let uses = std::mem::take(&mut walk.blobs);
        report.blobs = uses.len();
        report.bytes = uses.iter().map(|u| u.declared).sum();
        let mut digests: Vec<Digest> = uses.iter().map(|u| u.digest.clone()).collect();
        digests.sort();
        digests.dedup();
        let states = self.blob_states(repo, digests).await?;
        for u in uses {
            let of = u.users.join(", ");
            match &states[&u.digest] {
                BlobState::Missing => walk.problem(Problem::MissingBlob { digest: u.digest, blob: u.kind, of }),
                BlobState::Present(size, hashed) => {
                    if *size != u.declared {
                        walk.problem(Problem::BlobSize {
                            digest: u.digest.clone(),
                            blob: u.kind,
                            actual: *size,
                            declared: u.declared,
                        });
                    }
                    if let Some(actual) = hashed.as_ref().filter(|a| **a != u.digest) {
                        walk.problem(Problem::BlobDigest {
                            digest: u.digest.clone(),
                            blob: u.kind,
                            actual: actual.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The state of each blob: from the run's cache, else stat (or, with `deep`, hash) it, several at once.
    async fn blob_states(
        &self,
        repo: &RepoName,
        digests: Vec<Digest>,
    ) -> Result<HashMap<Digest, BlobState>, VerifyError> {
        let mut out = HashMap::new();
        let mut todo = Vec::new();
        {
            let cache = self.blobs.lock().expect("blob cache");
            for d in digests {
                match cache.get(&d) {
                    Some(s) => {
                        out.insert(d, s.clone());
                    }
                    None => todo.push(d),
                }
            }
        }
        let deep = self.options.deep;
        let results: Vec<Result<(Digest, BlobState), VerifyError>> = futures_util::stream::iter(todo)
            .map(|d| {
                let source = self.source.clone();
                let repo = repo.clone();
                let slots = self.hashing.clone();
                async move {
                    let state = if deep {
                        let _slot = slots.acquire_owned().await.expect("the semaphore is never closed");
                        hash_blob(&source, &repo, &d).await?
                    } else {
                        stat_blob(&source, &repo, &d).await?
                    };
                    Ok((d, state))
                }
            })
            .buffer_unordered(self.parallel)
            .collect()
            .await;
        let mut cache = self.blobs.lock().expect("blob cache");
        for r in results {
            let (d, s) = r?;
            cache.insert(d.clone(), s.clone());
            out.insert(d, s);
        }
        Ok(out)
    }
}

async fn stat_blob(source: &Source, repo: &RepoName, d: &Digest) -> Result<BlobState, VerifyError> {
    Ok(match source.blob_size(repo, d).await? {
        Some(size) => BlobState::Present(size, None),
        None => BlobState::Missing,
    })
}

/// Stream the blob through a hasher on the blocking pool (pieces of about a MiB, so memory stays bounded
/// and the async workers never hash).
async fn hash_blob(source: &Source, repo: &RepoName, d: &Digest) -> Result<BlobState, VerifyError> {
    let Some(mut body) = source.blob_stream(repo, d).await? else { return Ok(BlobState::Missing) };
    let mut digester = Digester::new(d.algorithm());
    let mut piece = BytesMut::new();
    loop {
        let next = body.next().await;
        let last = next.is_none();
        let chunk = match next {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                return Err(VerifyError::Store(StoreError::Io { path: d.to_string(), source: e }));
            }
            None => None,
        };
        // Whole chunks (the store's 2 MiB windows) go as they are; small ones are gathered first.
        let work: Option<Bytes> = match chunk {
            Some(c) if piece.is_empty() && c.len() >= HASH_PIECE => Some(c),
            Some(c) => {
                piece.extend_from_slice(&c);
                (piece.len() >= HASH_PIECE).then(|| piece.split().freeze())
            }
            None => (!piece.is_empty()).then(|| piece.split().freeze()),
        };
        if let Some(work) = work {
            digester = tokio::task::spawn_blocking(move || {
                digester.update(&work);
                digester
            })
            .await
            .map_err(|e| VerifyError::Task(e.to_string()))?;
        }
        if last {
            break;
        }
    }
    let size = digester.len();
    Ok(BlobState::Present(size, Some(digester.finish())))
}

fn finish(mut report: ImageReport, walk: Walk) -> ImageReport {
    report.problems = walk.problems;
    report.ok = report.problems.is_empty();
    report
}

/// `os/arch[/variant]`, or `unknown`.
fn platform_name(p: Option<&Platform>) -> String {
    p.map_or_else(|| "unknown".to_owned(), Platform::to_string)
}

/// A referrer is a signature when its artifact type says so (cosign, notation), else an attestation.
fn file_referrer(d: Descriptor, attestations: &mut Vec<Attached>, signatures: &mut Vec<Attached>) {
    let artifact_type = d.artifact_type.as_ref().map(|t| t.to_string());
    let t = artifact_type.as_deref().unwrap_or("");
    let signature =
        t.contains("signature") || t.contains(".sig") || t == "application/vnd.dev.cosign.simplesigning.v1+json";
    let a = Attached { digest: d.digest, artifact_type, source: "referrers" };
    let list = if signature { signatures } else { attestations };
    if !list.iter().any(|x| x.digest == a.digest) {
        list.push(a);
    }
}

/// The platform fields of an image config.
fn parse_config_platform(bytes: &[u8]) -> Result<Platform, String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
        #[serde(rename = "os.version", default)]
        os_version: Option<String>,
    }
    let c: Config = serde_json::from_slice(bytes).map_err(|e| format!("not an image config: {e}"))?;
    Ok(Platform {
        os: c.os,
        architecture: c.architecture,
        os_version: c.os_version,
        os_features: Vec::new(),
        variant: c.variant.filter(|v| !v.is_empty()),
        features: Vec::new(),
    })
}

/// A parsed `REF` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `repo:tag` or `repo@digest`.
    One(RepoName, RefSpec),
    /// `repo`: every tag.
    Repo(RepoName),
}

/// Parse `repo:tag`, `repo@digest` or `repo` (a `:` only counts after the last `/`).
pub fn parse_target(s: &str) -> Result<Target, String> {
    let bad = |e: &dyn fmt::Display| format!("{s:?}: {e}");
    if let Some((repo, digest)) = s.split_once('@') {
        let repo: RepoName = repo.parse().map_err(|e| bad(&e))?;
        return Ok(Target::One(repo, RefSpec::Digest(digest.parse().map_err(|e| bad(&e))?)));
    }
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[slash..].find(':') {
        Some(i) => {
            let (repo, tag) = (&s[..slash + i], &s[slash + i + 1..]);
            Ok(Target::One(repo.parse().map_err(|e| bad(&e))?, RefSpec::Tag(tag.parse().map_err(|e| bad(&e))?)))
        }
        None => Ok(Target::Repo(s.parse().map_err(|e| bad(&e))?)),
    }
}

/// Parse the tail of `/_wharf/verify/<repo>/<ref>`: the last segment is the tag or digest, the rest the
/// repository (which may contain slashes).
pub fn parse_path(tail: &str) -> Result<(RepoName, RefSpec), String> {
    let tail = tail.trim_matches('/');
    let (repo, reference) =
        tail.rsplit_once('/').ok_or_else(|| format!("{tail:?}: expected <repository>/<tag or digest>"))?;
    let repo: RepoName = repo.parse().map_err(|e| format!("{repo:?}: {e}"))?;
    let reference: RefSpec = reference.parse().map_err(|e| format!("{reference:?}: {e}"))?;
    Ok((repo, reference))
}

/// Verify several references, a few at once (so small images keep every core busy), reports in order.
pub async fn verify_many(v: &Verifier, targets: Vec<(RepoName, RefSpec)>) -> Result<Vec<ImageReport>, VerifyError> {
    use futures_util::TryStreamExt;
    futures_util::stream::iter(targets)
        .map(|(repo, reference)| async move { v.verify(&repo, &reference).await })
        .buffered(v.parallel)
        .try_collect()
        .await
}

/// Verify every tag of every repository of the local store, in order.
pub async fn verify_all(v: &Verifier) -> Result<Vec<ImageReport>, VerifyError> {
    let mut targets = Vec::new();
    for repo in v.source().repos().await? {
        let tags = match v.source().tags(&repo).await {
            Ok(t) => t,
            Err(VerifyError::NoTags(_)) => continue,
            Err(e) => return Err(e),
        };
        targets.extend(tags.into_iter().map(|t| (repo.clone(), RefSpec::Tag(t))));
    }
    verify_many(v, targets).await
}

/// Group problems by image for plain output: `reference: problem` lines.
pub fn lines(reports: &[ImageReport]) -> Vec<String> {
    reports.iter().flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.reference))).collect()
}

/// Count of attestations and signatures over an image's platforms (for summaries).
pub fn attached_counts(r: &ImageReport) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    let a: usize = r.platforms.iter().map(|p| p.attestations.len()).sum::<usize>() + r.attestations.len();
    let s: usize = r.platforms.iter().map(|p| p.signatures.len()).sum::<usize>() + r.signatures.len();
    m.insert("attestations", a);
    m.insert("signatures", s);
    m
}
