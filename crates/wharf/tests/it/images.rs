//! Generated test images (no downloads): multi-platform indexes in OCI and Docker flavours, written as an OCI
//! image layout on disk or pushed over HTTP.

use std::path::Path;

use oci::Digest;
use serde_json::json;

use crate::common::Client;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub const PLATFORMS: &[(&str, &str, Option<&str>)] = &[
    ("linux", "amd64", None),
    ("linux", "arm64", Some("v8")),
    ("linux", "arm", Some("v7")),
    ("linux", "s390x", None),
    ("linux", "ppc64le", None),
];

/// Deterministic pseudo-random bytes (xorshift), so content differs per seed without a rand dependency.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub struct Content {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Content {
    fn new(media_type: &str, bytes: Vec<u8>) -> Content {
        Content { digest: Digest::sha256_of(&bytes), media_type: media_type.to_owned(), bytes }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.bytes.len() })
    }
}

/// One multi-platform image: blobs, per-platform manifests, and the index over them.
pub struct Image {
    pub blobs: Vec<Content>,
    pub manifests: Vec<Content>,
    pub index: Content,
}

/// Build an image with `platforms`; `docker` chooses Docker schema 2 media types instead of OCI.
pub fn multi_arch(seed: u64, platforms: &[(&str, &str, Option<&str>)], docker: bool, layer_size: usize) -> Image {
    let (index_mt, manifest_mt, config_mt, layer_mt) = if docker {
        (
            DOCKER_LIST,
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (OCI_INDEX, OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar")
    };
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let mut entries = Vec::new();
    for (i, (os, arch, variant)) in platforms.iter().enumerate() {
        let layer = Content::new(layer_mt, noise(seed * 100 + i as u64, layer_size));
        let mut config = json!({
            "architecture": arch, "os": os,
            "rootfs": { "type": "layers", "diff_ids": [layer.digest.to_string()] },
            "config": { "Env": [format!("SEED={seed}")] },
        });
        let mut platform = json!({ "architecture": arch, "os": os });
        if let Some(v) = variant {
            config["variant"] = json!(v);
            platform["variant"] = json!(v);
        }
        let config = Content::new(config_mt, serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": manifest_mt,
            "config": config.descriptor(), "layers": [layer.descriptor()],
        });
        let manifest = Content::new(manifest_mt, serde_json::to_vec_pretty(&manifest).unwrap());
        let mut entry = manifest.descriptor();
        entry["platform"] = platform;
        entries.push(entry);
        blobs.push(layer);
        blobs.push(config);
        manifests.push(manifest);
    }
    let index = json!({ "schemaVersion": 2, "mediaType": index_mt, "manifests": entries });
    let index = Content::new(index_mt, serde_json::to_vec_pretty(&index).unwrap());
    Image { blobs, manifests, index }
}

impl Image {
    /// Push children first, then the index under `tag`.
    /// Pull `repo:reference` and everything below it (index, platform manifests, blobs), checking every
    /// digest; the error names the first thing missing or wrong.
    pub async fn pull_whole(&self, c: &Client, repo: &str, reference: &str) -> Result<(), String> {
        let accept = [("accept", [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", "))];
        let accept: Vec<(&str, &str)> = accept.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c.req(reqwest::Method::GET, &format!("/v2/{repo}/manifests/{reference}"), &accept, None).await;
        if r.status != 200 || Digest::sha256_of(&r.body) != self.index.digest {
            return Err(format!("{repo}:{reference}: {}", r.status));
        }
        for m in &self.manifests {
            let r = c.req(reqwest::Method::GET, &format!("/v2/{repo}/manifests/{}", m.digest), &accept, None).await;
            if r.status != 200 || Digest::sha256_of(&r.body) != m.digest {
                return Err(format!("{repo}@{}: {}", m.digest, r.status));
            }
        }
        for b in &self.blobs {
            let r = c.get(&format!("/v2/{repo}/blobs/{}", b.digest)).await;
            if r.status != 200 || Digest::sha256_of(&r.body) != b.digest {
                return Err(format!("{repo} blob {}: {}", b.digest, r.status));
            }
        }
        Ok(())
    }

    pub async fn push(&self, c: &Client, repo: &str, tag: &str) {
        for b in &self.blobs {
            c.push_blob(repo, &b.bytes).await;
        }
        for m in &self.manifests {
            let r = c.push_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes).await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        let r = c.push_manifest(repo, tag, &self.index.media_type, &self.index.bytes).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }

    /// Write an OCI image layout with the index referenced under `tag`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for c in self.blobs.iter().chain(&self.manifests).chain([&self.index]) {
            std::fs::write(blobs.join(c.digest.hex()), &c.bytes).unwrap();
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let mut d = self.index.descriptor();
        d["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        let top = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d] });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    }
}
