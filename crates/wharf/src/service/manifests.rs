//! Manifest reads and writes, tags, referrers and listings.

use bytes::Bytes;
use oci::{Descriptor, Digest, Manifest, MediaType, RefSpec, RepoName, Tag};

use super::tags::TagWrite;
use super::{Error, Registry, Result, Source};
use crate::policy::routing::MirrorRoute;
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
        match self.source(repo, ns).await? {
            Source::Hosted(r) => {
                let found = self.hosted_manifest(&r, reference).await?;
                self.note_pull(&r, &found.0);
                Ok(hosted(found))
            }
            Source::Mirror(m) => self.mirrored_manifest(&m, reference).await,
            Source::Nothing(repo) => Err(Error::ManifestUnknown { repo, reference: reference.to_string() }),
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
        let cache = self.read_cache.as_deref();
        let digest = match reference {
            RefSpec::Digest(d) => d.clone(),
            RefSpec::Tag(t) => match cache.and_then(|c| c.tag(repo, t)) {
                Some(d) => d,
                None => {
                    let d = self.store.tag_get(repo, t).await?.ok_or_else(unknown)?;
                    if let Some(c) = cache {
                        c.put_tag(repo, t, &d);
                    }
                    d
                }
            },
        };
        if let Some(m) = cache.and_then(|c| c.manifest(repo, &digest)) {
            return Ok((digest, m));
        }
        let manifest = self.store.manifest_get(repo, &digest).await?.ok_or_else(unknown)?;
        if let Some(c) = cache {
            c.put_manifest(repo, &digest, &manifest);
        }
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
        self.manifest_put_with(repo, ns, reference, content_type, bytes, &TagWrite::by("push")).await
    }

    /// [`Registry::manifest_put`] with the tag write's conditions and attribution (`If-Match`, the pusher).
    pub async fn manifest_put_with(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        reference: &RefSpec,
        content_type: Option<&MediaType>,
        bytes: Bytes,
        write: &TagWrite,
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
        // Shared with other pushes, exclusive against a blob delete: the blobs checked here stay linked until
        // the manifest and its reference entries are stored.
        let _repo_guard = self.store.repo_locks().shared(repo).await;
        self.check_references(repo, &manifest).await?;
        // Tag conditions and rules first, so a refused push stores nothing.
        let note = match reference {
            RefSpec::Tag(tag) => {
                self.precheck_tag(repo, tag, &manifest.digest, write).await?;
                self.check_required_platforms(repo, tag, &manifest).await?
            }
            RefSpec::Digest(_) => None,
        };
        let referrer = manifest.referrer();
        let link = referrer.as_ref().map(|(s, d)| (s, d));
        self.store.manifest_put(repo, &manifest.digest, &StoredManifest::from(&manifest), link).await?;
        if let RefSpec::Tag(tag) = reference {
            self.tag_move_noted(repo, tag, &manifest.digest, write, note).await?;
        }
        if self.events.enabled() {
            let tag = match reference {
                RefSpec::Tag(t) => Some(t.to_string()),
                RefSpec::Digest(_) => None,
            };
            let subject = Some(match &tag {
                Some(t) => format!("{repo}:{t}"),
                None => format!("{repo}@{}", manifest.digest),
            });
            self.events.emit(crate::events::Event::about(
                "manifest.pushed",
                repo.as_str(),
                subject,
                serde_json::json!({
                    "repository": repo.to_string(),
                    "digest": manifest.digest.to_string(),
                    "mediaType": manifest.media_type.to_string(),
                    "size": manifest.bytes.len(),
                    "tag": tag,
                    "by": write.source,
                }),
            ));
        }
        Ok(PutOutcome { digest: manifest.digest, subject: referrer.map(|(s, _)| s) })
    }

    /// Every blob and child manifest a manifest references must already be in the repository, so a pulled
    /// manifest is always complete.
    async fn check_references(&self, repo: &RepoName, manifest: &Manifest) -> Result<()> {
        let config = match &manifest.body {
            oci::ManifestBody::Image(i) => Some(&i.config.digest),
            oci::ManifestBody::Index(_) => None,
        };
        for desc in manifest.references() {
            if desc.media_type.is_manifest() && manifest.media_type.is_index() {
                if self.store.manifest_get(repo, &desc.digest).await?.is_none() {
                    return Err(Error::ManifestBlobUnknown(desc.digest.clone()));
                }
                continue;
            }
            // Only non-distributable layers may live elsewhere (their `urls` say where); a config, or any
            // other layer that merely carries `urls`, must be here, or the image could never be pulled whole.
            let is_config = config == Some(&desc.digest);
            if !desc.urls.is_empty() && !is_config && desc.media_type.is_non_distributable() {
                continue;
            }
            if !self.store.blob_linked(repo, &desc.digest).await? {
                return Err(Error::ManifestBlobUnknown(desc.digest.clone()));
            }
        }
        Ok(())
    }

    /// Delete a manifest by digest, or untag by tag.
    pub async fn manifest_delete(&self, repo: &RepoName, ns: Option<&str>, reference: &RefSpec) -> Result<()> {
        self.manifest_delete_with(repo, ns, reference, &TagWrite::by("delete")).await
    }

    /// [`Registry::manifest_delete`] with a tag delete's conditions and attribution.
    pub async fn manifest_delete_with(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        reference: &RefSpec,
        write: &TagWrite,
    ) -> Result<()> {
        let repo = &self.writable(repo, ns)?;
        let found = match reference {
            RefSpec::Digest(d) => {
                // Exclusive against manifest pushes: a re-push of the same digest must not interleave with the
                // removal of its tags and blob references.
                let _guard = self.store.repo_locks().exclusive(repo).await;
                let frozen = self.immutable_tags_on(repo, d).await?;
                if !frozen.is_empty() {
                    return Err(Error::Denied(format!(
                        "{d} is tagged {} in {repo}, immutable by the [[tags]] rules; it cannot be deleted",
                        frozen.join(", ")
                    )));
                }
                let found = self.store.manifest_delete(repo, d).await?;
                self.forget_reads(repo);
                if found {
                    self.events.emit(crate::events::Event::about(
                        "manifest.deleted",
                        repo.as_str(),
                        Some(format!("{repo}@{d}")),
                        serde_json::json!({"repository": repo.to_string(), "digest": d.to_string(), "by": write.source}),
                    ));
                }
                found
            }
            RefSpec::Tag(t) => self.tag_remove(repo, t, write).await?,
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
        let Some(repo) = &self.readable(repo, ns).await? else { return Err(Error::NameUnknown(repo.clone())) };
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

    /// Manifests in `repo` whose subject is `subject`, optionally only those of one artifact type; for a
    /// mirrored repository the upstream's answer (cached briefly, served stale with a warning when it is
    /// down), never an empty list that only means "nothing cached".
    pub async fn referrers(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        subject: &Digest,
        artifact_type: Option<&MediaType>,
    ) -> Result<(Vec<Descriptor>, Option<String>)> {
        let (mut all, warning) = match self.source(repo, ns).await? {
            Source::Hosted(r) => (self.store.referrers(&r, subject).await?, None),
            Source::Mirror(m) => {
                let mirror = self.mirror.as_ref().expect("mirror routes exist only with a mirror");
                let answer = mirror.referrers(&m, subject).await?;
                (answer.descriptors, answer.warning)
            }
            Source::Nothing(r) => return Err(Error::NameUnknown(r)),
        };
        if let Some(t) = artifact_type {
            all.retain(|d| d.artifact_type.as_ref() == Some(t));
        }
        Ok((all, warning))
    }
}
