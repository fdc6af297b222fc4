//! Manifest reads and writes, tags, referrers and listings.

use bytes::Bytes;
use oci::{Descriptor, Digest, Manifest, MediaType, RefSpec, RepoName, Tag};

use super::{Error, Registry, Result};
use crate::policy::routing::{MirrorRoute, Route};
use crate::store::StoredManifest;

/// A manifest read: what to serve and whether it is a stale cached copy.
#[derive(Debug)]
pub struct ManifestAnswer {
    /// Digest of the bytes.
    pub digest: Digest,
    /// Exact bytes and media type.
    pub manifest: StoredManifest,
    /// A `Warning` for the client when a cached copy is served because the upstream failed.
    pub warning: Option<String>,
}

/// What a successful manifest push produced.
#[derive(Debug)]
pub struct PutOutcome {
    /// Digest of the stored bytes.
    pub digest: Digest,
    /// The subject, when the manifest is a referrer (echoed in `OCI-Subject`).
    pub subject: Option<Digest>,
}

impl Registry {
    /// Resolve a tag or digest, from the store or through the mirror.
    pub async fn manifest_get(&self, repo: &RepoName, ns: Option<&str>, reference: &RefSpec) -> Result<ManifestAnswer> {
        let hosted = |(digest, manifest)| ManifestAnswer { digest, manifest, warning: None };
        match self.route(repo, ns)? {
            Route::Hosted(r) => self.hosted_manifest(&r, reference).await.map(hosted),
            Route::Mirror(m) => self.mirrored_manifest(&m, reference).await,
            Route::HostedOrMirror(r, m) => match self.hosted_manifest(&r, reference).await {
                Err(Error::ManifestUnknown { .. }) => self.mirrored_manifest(&m, reference).await,
                other => other.map(hosted),
            },
        }
    }

    async fn mirrored_manifest(&self, m: &MirrorRoute, reference: &RefSpec) -> Result<ManifestAnswer> {
        let mirror = self.mirror.as_ref().expect("mirror routes exist only with a mirror");
        match mirror.manifest(m, reference).await? {
            Some(a) => Ok(ManifestAnswer { digest: a.digest, manifest: a.manifest, warning: a.warning }),
            None => Err(Error::ManifestUnknown { repo: m.local.clone(), reference: reference.to_string() }),
        }
    }

    /// Resolve a tag or digest to the stored manifest of a hosted repository.
    pub async fn hosted_manifest(&self, repo: &RepoName, reference: &RefSpec) -> Result<(Digest, StoredManifest)> {
        let unknown = || Error::ManifestUnknown { repo: repo.clone(), reference: reference.to_string() };
        let digest = match reference {
            RefSpec::Digest(d) => d.clone(),
            RefSpec::Tag(t) => self.store.tag_get(repo, t).await?.ok_or_else(unknown)?,
        };
        let manifest = self.store.manifest_get(repo, &digest).await?.ok_or_else(unknown)?;
        Ok((digest, manifest))
    }

    /// Validate and store a manifest; point the tag at it when the reference is a tag.
    pub async fn manifest_put(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        reference: &RefSpec,
        content_type: Option<&MediaType>,
        bytes: Bytes,
    ) -> Result<PutOutcome> {
        let repo = &self.writable(repo, ns)?;
        if bytes.len() > super::MAX_MANIFEST_BYTES {
            return Err(Error::ManifestTooLarge);
        }
        let algo = match reference {
            RefSpec::Digest(d) => d.algorithm(),
            RefSpec::Tag(_) => oci::Algorithm::Sha256,
        };
        let manifest = Manifest::parse(bytes, content_type, algo).map_err(|e| Error::ManifestInvalid(e.to_string()))?;
        if let RefSpec::Digest(d) = reference {
            if d != &manifest.digest {
                return Err(Error::DigestInvalid(format!(
                    "manifest pushed as {d} but its content hashes to {}",
                    manifest.digest
                )));
            }
        }
        self.check_references(repo, &manifest).await?;
        let subject = manifest.subject().map(|s| s.digest.clone());
        let descriptor = subject.as_ref().map(|_| manifest.descriptor());
        let stored = StoredManifest { bytes: manifest.bytes.clone(), media_type: manifest.media_type.clone() };
        let referrer = subject.as_ref().zip(descriptor.as_ref());
        self.store.manifest_put(repo, &manifest.digest, &stored, referrer).await?;
        if let RefSpec::Tag(tag) = reference {
            self.store.tag_put(repo, tag, &manifest.digest).await?;
        }
        Ok(PutOutcome { digest: manifest.digest, subject })
    }

    /// Every blob and child manifest a manifest references must already be in the repository, so a pulled
    /// manifest is always complete.
    async fn check_references(&self, repo: &RepoName, manifest: &Manifest) -> Result<()> {
        for desc in manifest.references() {
            if desc.media_type.is_manifest() && manifest.media_type.is_index() {
                if self.store.manifest_get(repo, &desc.digest).await?.is_none() {
                    return Err(Error::ManifestBlobUnknown(desc.digest.clone()));
                }
                continue;
            }
            if !desc.urls.is_empty() {
                continue; // foreign layers live elsewhere by design
            }
            if !self.store.blob_linked(repo, &desc.digest).await? {
                return Err(Error::ManifestBlobUnknown(desc.digest.clone()));
            }
        }
        Ok(())
    }

    /// Delete a manifest by digest, or untag by tag.
    pub async fn manifest_delete(&self, repo: &RepoName, ns: Option<&str>, reference: &RefSpec) -> Result<()> {
        let repo = &self.writable(repo, ns)?;
        let found = match reference {
            RefSpec::Digest(d) => self.store.manifest_delete(repo, d).await?,
            RefSpec::Tag(t) => self.store.tag_delete(repo, t).await?,
        };
        if found {
            Ok(())
        } else {
            Err(Error::ManifestUnknown { repo: repo.clone(), reference: reference.to_string() })
        }
    }

    /// One page of a repository's tags (`limit` + 1 are fetched so the caller knows whether more follow).
    pub async fn tag_list(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        last: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Tag>, bool)> {
        let repo = &self.readable(repo, ns)?;
        let mut tags = self
            .store
            .tag_list(repo, last, limit.saturating_add(1))
            .await?
            .ok_or_else(|| Error::NameUnknown(repo.clone()))?;
        let more = tags.len() > limit;
        tags.truncate(limit);
        Ok((tags, more))
    }

    /// One page of the catalog, with the same "more follow" flag.
    pub async fn catalog(&self, last: Option<&str>, limit: usize) -> Result<(Vec<RepoName>, bool)> {
        let mut repos = self.store.repo_list(last, limit.saturating_add(1)).await?;
        let more = repos.len() > limit;
        repos.truncate(limit);
        Ok((repos, more))
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        subject: &Digest,
        artifact_type: Option<&MediaType>,
    ) -> Result<Vec<Descriptor>> {
        let repo = &self.readable(repo, ns)?;
        let mut all = self.store.referrers(repo, subject).await?;
        if let Some(t) = artifact_type {
            all.retain(|d| d.artifact_type.as_ref() == Some(t));
        }
        Ok(all)
    }
}
