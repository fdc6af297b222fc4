//! Manifest reads and writes, tags, referrers and listings.

use bytes::Bytes;
use oci::{Descriptor, Digest, Manifest, MediaType, RefSpec, RepoName, Tag};

use super::{Error, Registry, Result};
use crate::store::StoredManifest;

/// What a successful manifest push produced.
#[derive(Debug)]
pub struct PutOutcome {
    /// Digest of the stored bytes.
    pub digest: Digest,
    /// The subject, when the manifest is a referrer (echoed in `OCI-Subject`).
    pub subject: Option<Digest>,
}

impl Registry {
    /// Resolve a tag or digest to the stored manifest.
    pub async fn manifest_get(&self, repo: &RepoName, reference: &RefSpec) -> Result<(Digest, StoredManifest)> {
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
        reference: &RefSpec,
        content_type: Option<&MediaType>,
        bytes: Bytes,
    ) -> Result<PutOutcome> {
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
    pub async fn manifest_delete(&self, repo: &RepoName, reference: &RefSpec) -> Result<()> {
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
    pub async fn tag_list(&self, repo: &RepoName, last: Option<&str>, limit: usize) -> Result<(Vec<Tag>, bool)> {
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
        subject: &Digest,
        artifact_type: Option<&MediaType>,
    ) -> Result<Vec<Descriptor>> {
        let mut all = self.store.referrers(repo, subject).await?;
        if let Some(t) = artifact_type {
            all.retain(|d| d.artifact_type.as_ref() == Some(t));
        }
        Ok(all)
    }
}
