//! Manifests: the exact bytes that were pushed, plus a parsed view.
//!
//! The bytes are the truth: a manifest's digest is the hash of the bytes as received, so Wharf stores and
//! serves them unchanged and never re-serialises the parsed view.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::descriptor::Descriptor;
use crate::digest::{Algorithm, Digest};
use crate::media_type::MediaType;

/// Largest manifest Wharf accepts, pushed by a client or fetched from an upstream. The distribution spec asks
/// registries to take at least 4 MiB; a bound keeps one hostile client or upstream from filling memory, since
/// manifests (unlike blobs) are held whole to be parsed and hashed.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Why bytes are not an acceptable manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("manifest is not valid JSON for {kind}: {reason}")]
    Json {
        /// Which manifest kind the parser expected.
        kind: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// `schemaVersion` is missing or not 2.
    #[error("manifest schemaVersion must be 2 (Docker schema 1 is not supported)")]
    SchemaVersion,
    /// The declared Content-Type and the `mediaType` field disagree.
    #[error("manifest mediaType field {body:?} does not match the Content-Type {declared:?}")]
    MediaTypeMismatch {
        /// From the request header.
        declared: String,
        /// From the document.
        body: String,
    },
    /// Neither the header, the document nor its shape says which kind of manifest this is.
    #[error("cannot tell the manifest's media type: {0:?} is not a manifest media type")]
    UnknownMediaType(String),
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Optional self-declared media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// OCI 1.1 artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<MediaType>,
    /// The image configuration blob.
    pub config: Descriptor,
    /// Layers, in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (signatures, SBOMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI index or Docker manifest list).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Optional self-declared media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// OCI 1.1 artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<MediaType>,
    /// Child manifests.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The parsed view of a manifest.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per manifest, never in bulk collections
pub enum ManifestBody {
    /// A single-platform image or artifact.
    Image(ImageManifest),
    /// A list of manifests.
    Index(ImageIndex),
}

/// A manifest: exact bytes, their digest, media type and parsed body.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The bytes as pushed or fetched.
    pub bytes: Bytes,
    /// Digest of `bytes`.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: MediaType,
    /// Parsed view.
    pub body: ManifestBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<MediaType>,
    #[serde(default)]
    manifests: Option<IgnoredAny>,
}

fn json_err(kind: &'static str) -> impl Fn(serde_json::Error) -> ManifestError {
    move |e| ManifestError::Json { kind, reason: e.to_string() }
}

impl Manifest {
    /// Parse bytes received with an optional declared media type (the request's Content-Type), hashing them
    /// with `algo`.
    pub fn parse(bytes: Bytes, declared: Option<&MediaType>, algo: Algorithm) -> Result<Manifest, ManifestError> {
        let probe: Probe = serde_json::from_slice(&bytes).map_err(json_err("a manifest"))?;
        if probe.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let body_type = probe.media_type.as_ref().filter(|m| m.is_manifest());
        let declared = declared.filter(|d| d.is_manifest());
        let media_type = match (declared, body_type, probe.media_type.as_ref()) {
            (Some(d), Some(b), _) if d != b => {
                return Err(ManifestError::MediaTypeMismatch { declared: d.to_string(), body: b.to_string() })
            }
            (Some(d), _, Some(other)) if !other.is_manifest() => {
                return Err(ManifestError::MediaTypeMismatch { declared: d.to_string(), body: other.to_string() })
            }
            (Some(d), _, _) => d.clone(),
            (None, Some(b), _) => b.clone(),
            (None, None, Some(other)) => return Err(ManifestError::UnknownMediaType(other.to_string())),
            (None, None, None) if probe.manifests.is_some() => MediaType::OciIndex,
            (None, None, None) => MediaType::OciManifest,
        };
        let body = if media_type.is_index() {
            ManifestBody::Index(serde_json::from_slice(&bytes).map_err(json_err("an image index"))?)
        } else {
            ManifestBody::Image(serde_json::from_slice(&bytes).map_err(json_err("an image manifest"))?)
        };
        let digest = Digest::of(algo, &bytes);
        Ok(Manifest { bytes, digest, media_type, body })
    }

    /// Everything this manifest points at that must exist first: config and layers, or child manifests.
    pub fn references(&self) -> Box<dyn Iterator<Item = &Descriptor> + Send + '_> {
        match &self.body {
            ManifestBody::Image(m) => Box::new(std::iter::once(&m.config).chain(m.layers.iter())),
            ManifestBody::Index(i) => Box::new(i.manifests.iter()),
        }
    }

    /// The `subject` (OCI 1.1 referrers), if any.
    pub fn subject(&self) -> Option<&Descriptor> {
        match &self.body {
            ManifestBody::Image(m) => m.subject.as_ref(),
            ManifestBody::Index(i) => i.subject.as_ref(),
        }
    }

    /// The artifact type the referrers API reports: `artifactType`, else the config's media type.
    pub fn artifact_type(&self) -> Option<&MediaType> {
        match &self.body {
            ManifestBody::Image(m) => m.artifact_type.as_ref().or(Some(&m.config.media_type)),
            ManifestBody::Index(i) => i.artifact_type.as_ref(),
        }
    }

    /// Top-level annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match &self.body {
            ManifestBody::Image(m) => &m.annotations,
            ManifestBody::Index(i) => &i.annotations,
        }
    }

    /// The referrer link this manifest creates, if it has a `subject`: the subject's digest and the descriptor
    /// the referrers API lists for this manifest. The one place that rule lives, for pushes, mirror fills and
    /// sync alike.
    pub fn referrer(&self) -> Option<(Digest, Descriptor)> {
        self.subject().map(|s| (s.digest.clone(), self.descriptor()))
    }

    /// A descriptor pointing at this manifest (as listed by the referrers API).
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(self.media_type.clone(), self.digest.clone(), self.bytes.len() as u64);
        d.artifact_type = self.artifact_type().cloned();
        d.annotations = self.annotations().clone();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,{extra}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D1}","size":0}}]}}"#
        ))
    }

    #[test]
    fn parses_image_and_keeps_bytes() {
        let b = image(r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#);
        let m = Manifest::parse(b.clone(), Some(&MediaType::OciManifest), Algorithm::Sha256).unwrap();
        assert_eq!(m.bytes, b);
        assert_eq!(m.digest, Digest::sha256_of(&b));
        assert_eq!(m.references().count(), 2);
        assert_eq!(m.artifact_type(), Some(&MediaType::OciConfig));
    }

    #[test]
    fn infers_type_without_header() {
        let m = Manifest::parse(image(""), None, Algorithm::Sha256).unwrap();
        assert_eq!(m.media_type, MediaType::OciManifest);
        let idx = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[]}"#);
        assert_eq!(Manifest::parse(idx, None, Algorithm::Sha256).unwrap().media_type, MediaType::OciIndex);
        let docker = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D1}","size":1,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#
        ));
        let m = Manifest::parse(docker, None, Algorithm::Sha256).unwrap();
        assert_eq!(m.media_type, MediaType::DockerManifestList);
        let ManifestBody::Index(i) = &m.body else { panic!() };
        assert_eq!(i.manifests[0].platform.as_ref().unwrap().to_string(), "linux/arm/v7");
    }

    #[test]
    fn rejects() {
        let bad =
            |b: &str, d: Option<MediaType>| Manifest::parse(Bytes::from(b.to_owned()), d.as_ref(), Algorithm::Sha256);
        assert!(matches!(bad("not json", None), Err(ManifestError::Json { .. })));
        assert!(matches!(bad(r#"{"schemaVersion":1}"#, None), Err(ManifestError::SchemaVersion)));
        assert!(matches!(bad(r#"{"schemaVersion":2}"#, None), Err(ManifestError::Json { .. })));
        assert!(matches!(
            bad(
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                Some(MediaType::OciManifest)
            ),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:abc","size":1},"layers":[]}"#;
        assert!(matches!(bad(bad_digest, None), Err(ManifestError::Json { .. })));
    }

    #[test]
    fn subject_and_artifact_type() {
        let b = image(&format!(
            r#""artifactType":"application/vnd.example+json","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":5}},"annotations":{{"a":"b"}},"#
        ));
        let m = Manifest::parse(b, None, Algorithm::Sha256).unwrap();
        assert_eq!(m.subject().unwrap().size, 5);
        let d = m.descriptor();
        assert_eq!(d.artifact_type.unwrap().as_str(), "application/vnd.example+json");
        assert_eq!(d.annotations["a"], "b");
        let (subject, desc) = m.referrer().unwrap();
        assert_eq!((subject.to_string().as_str(), desc), (D1, m.descriptor()));
        assert!(Manifest::parse(image(""), None, Algorithm::Sha256).unwrap().referrer().is_none());
    }
}
