//! Media types Wharf recognises, with an open `Other` for everything else (artifacts carry their own).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A media type string, with the ones the registry must understand spelled out.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum MediaType {
    /// `application/vnd.oci.image.manifest.v1+json`
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
    /// `application/vnd.docker.distribution.manifest.v2+json`
    DockerManifestV2,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerManifestList,
    /// `application/vnd.oci.image.config.v1+json`
    OciConfig,
    /// `application/vnd.docker.container.image.v1+json`
    DockerConfig,
    /// `application/vnd.oci.image.layer.v1.tar`
    OciLayer,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    OciLayerGzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    OciLayerZstd,
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`
    DockerLayerGzip,
    /// `application/vnd.oci.empty.v1+json`
    EmptyJson,
    /// Anything else, kept verbatim.
    Other(String),
}

const TABLE: &[(MediaType, &str)] = &[
    (MediaType::OciManifest, "application/vnd.oci.image.manifest.v1+json"),
    (MediaType::OciIndex, "application/vnd.oci.image.index.v1+json"),
    (MediaType::DockerManifestV2, "application/vnd.docker.distribution.manifest.v2+json"),
    (MediaType::DockerManifestList, "application/vnd.docker.distribution.manifest.list.v2+json"),
    (MediaType::OciConfig, "application/vnd.oci.image.config.v1+json"),
    (MediaType::DockerConfig, "application/vnd.docker.container.image.v1+json"),
    (MediaType::OciLayer, "application/vnd.oci.image.layer.v1.tar"),
    (MediaType::OciLayerGzip, "application/vnd.oci.image.layer.v1.tar+gzip"),
    (MediaType::OciLayerZstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
    (MediaType::DockerLayerGzip, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    (MediaType::EmptyJson, "application/vnd.oci.empty.v1+json"),
];

impl MediaType {
    /// Parse a media type (parameters after `;` are dropped, case of the known types is ignored).
    pub fn parse(s: &str) -> MediaType {
        let s = s.split(';').next().unwrap_or("").trim();
        TABLE
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(s))
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| MediaType::Other(s.to_owned()))
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            MediaType::Other(s) => s,
            known => TABLE.iter().find(|(t, _)| t == known).map(|(_, s)| *s).unwrap_or(""),
        }
    }

    /// An image manifest (OCI or Docker schema 2).
    pub fn is_image_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifestV2)
    }

    /// An index (OCI index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }

    /// A layer that may legally live outside the registry (its descriptor's `urls` say where): the OCI
    /// non-distributable layers and Docker's foreign layers. Only these may be absent from the repository.
    pub fn is_non_distributable(&self) -> bool {
        let s = self.as_str();
        s.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
            || s == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    }

    /// Anything the registry stores under `/manifests/`.
    pub fn is_manifest(&self) -> bool {
        self.is_image_manifest() || self.is_index()
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(MediaType::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_known_and_other() {
        for (t, s) in TABLE {
            assert_eq!(&MediaType::parse(s), t);
            assert_eq!(t.as_str(), *s);
        }
        let o = MediaType::parse("application/vnd.example.sbom+json");
        assert_eq!(o, MediaType::Other("application/vnd.example.sbom+json".into()));
        assert_eq!(o.as_str(), "application/vnd.example.sbom+json");
    }

    #[test]
    fn parameters_dropped() {
        assert_eq!(MediaType::parse("application/vnd.oci.image.index.v1+json; charset=utf-8"), MediaType::OciIndex);
    }

    #[test]
    fn classes() {
        assert!(MediaType::DockerManifestList.is_index());
        assert!(MediaType::OciManifest.is_image_manifest());
        assert!(!MediaType::OciLayer.is_manifest());
        assert!(MediaType::parse("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").is_non_distributable());
        assert!(MediaType::parse("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip").is_non_distributable());
        assert!(!MediaType::OciLayerGzip.is_non_distributable());
        assert!(!MediaType::OciConfig.is_non_distributable());
    }
}
