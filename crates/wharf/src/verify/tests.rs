//! Generated images with every defect, in the memory store (and the fs store for `--deep` corruption).

use std::sync::Arc;

use bytes::Bytes;
use oci::{Descriptor, Digest, MediaType, RefSpec, RepoName};
use serde_json::{json, Value};

use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{ContentStore, StoredManifest};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// One platform of a generated image; tests tamper with the fields before it is stored.
struct Child {
    platform: Value,
    config: Value,
    layers: Vec<Vec<u8>>,
}

fn child(os: &str, arch: &str, variant: Option<&str>, seed: u8) -> Child {
    let mut platform = json!({ "os": os, "architecture": arch });
    let mut config = json!({ "os": os, "architecture": arch, "rootfs": { "type": "layers" } });
    if let Some(v) = variant {
        platform["variant"] = json!(v);
        config["variant"] = json!(v);
    }
    Child { platform, config, layers: vec![vec![seed; 1000 + seed as usize], vec![seed.wrapping_add(100); 300]] }
}

fn two() -> Vec<Child> {
    vec![child("linux", "amd64", None, 1), child("linux", "arm64", Some("v8"), 2)]
}

fn repo() -> RepoName {
    "team/app".parse().unwrap()
}

async fn put_blob(store: &dyn ContentStore, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let b = Bytes::copy_from_slice(bytes);
    store.blob_put(&d, None, Box::pin(futures_util::stream::once(async move { Ok(b) }))).await.unwrap();
    d
}

async fn put_manifest(store: &dyn ContentStore, mt: &str, v: &Value) -> Descriptor {
    let bytes = Bytes::from(serde_json::to_vec(v).unwrap());
    let d = Digest::sha256_of(&bytes);
    let m = oci::Manifest::parse(bytes.clone(), Some(&MediaType::parse(mt)), oci::Algorithm::Sha256).unwrap();
    let referrer = m.referrer();
    store.manifest_put(&repo(), &d, &StoredManifest::from(&m), referrer.as_ref().map(|(s, d)| (s, d))).await.unwrap();
    Descriptor::new(MediaType::parse(mt), d, bytes.len() as u64)
}

type EditManifest = Box<dyn Fn(usize, &mut Value)>;
type EditIndex = Box<dyn Fn(&mut Value)>;

/// How to damage an image while it is stored.
#[derive(Default)]
struct Damage {
    /// Children whose manifest is not stored.
    skip_manifest: Vec<usize>,
    /// Blobs (by content) not stored.
    skip_blob: Vec<Vec<u8>>,
    /// Edit a child's manifest JSON before it is stored.
    manifest: Option<EditManifest>,
    /// Edit the index JSON before it is stored.
    index: Option<EditIndex>,
}

/// Store the children and an index over them under `tag`; returns the index digest and the child digests.
async fn store_image(
    store: &dyn ContentStore,
    tag: &str,
    children: &[Child],
    damage: &Damage,
) -> (Digest, Vec<Digest>) {
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (i, c) in children.iter().enumerate() {
        let config = serde_json::to_vec(&c.config).unwrap();
        let config_d = put_blob(store, &config).await;
        let mut layers = Vec::new();
        for l in &c.layers {
            let d = if damage.skip_blob.contains(l) { Digest::sha256_of(l) } else { put_blob(store, l).await };
            layers.push(json!({ "mediaType": OCI_LAYER, "digest": d.to_string(), "size": l.len() }));
        }
        let mut m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_d.to_string(), "size": config.len() },
            "layers": layers,
        });
        if let Some(f) = &damage.manifest {
            f(i, &mut m);
        }
        let bytes = serde_json::to_vec(&m).unwrap();
        let d = Digest::sha256_of(&bytes);
        if !damage.skip_manifest.contains(&i) {
            put_manifest(store, OCI_MANIFEST, &m).await;
        }
        entries.push(
            json!({ "mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": bytes.len(), "platform": c.platform }),
        );
        digests.push(d);
    }
    let mut index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
    if let Some(f) = &damage.index {
        f(&mut index);
    }
    let d = put_manifest(store, OCI_INDEX, &index).await;
    store.tag_put(&repo(), &tag.parse().unwrap(), &d.digest).await.unwrap();
    (d.digest, digests)
}

async fn run(store: Arc<dyn ContentStore>, tag: &str, options: Options) -> ImageReport {
    let v = Verifier::new(Source::Store(store), options);
    v.verify(&repo(), &RefSpec::Tag(tag.parse().unwrap())).await.unwrap()
}

fn lines(r: &ImageReport) -> Vec<String> {
    r.problems.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn verify_sound_image_reports_nothing() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let (index, children) = store_image(&*store, "1.0", &two(), &Damage::default()).await;
    for deep in [false, true] {
        let r = run(store.clone(), "1.0", Options { deep, ..Default::default() }).await;
        assert!(r.ok, "{:?}", lines(&r));
        assert_eq!(r.digest.as_ref(), Some(&index));
        let names: Vec<&str> = r.platforms.iter().map(|p| p.platform.as_str()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64/v8"]);
        assert_eq!(r.platforms[1].digest, children[1].to_string());
        assert_eq!(r.blobs, 6);
    }
}

#[tokio::test]
async fn verify_missing_child_manifest_reported_once() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let mut children = two();
    children.push(child("linux", "s390x", None, 3));
    let damage = Damage { skip_manifest: vec![2], ..Default::default() };
    let (_, digests) = store_image(&*store, "1.0", &children, &damage).await;
    let r = run(store, "1.0", Options::default()).await;
    assert_eq!(lines(&r), [format!("missing child manifest {} (linux/s390x)", digests[2])]);
    assert!(!r.ok);
}

#[tokio::test]
async fn verify_config_platform_mismatch() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let mut children = two();
    children[1].config = json!({ "os": "linux", "architecture": "amd64" });
    store_image(&*store, "1.0", &children, &Damage::default()).await;
    let r = run(store, "1.0", Options::default()).await;
    assert_eq!(lines(&r), ["linux/arm64/v8: config says linux/amd64"]);
}

#[tokio::test]
async fn verify_os_version_mismatch() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let mut c = child("windows", "amd64", None, 4);
    c.platform["os.version"] = json!("10.0.20348.1");
    c.config["os.version"] = json!("10.0.17763.1");
    store_image(&*store, "win", &[c], &Damage::default()).await;
    let r = run(store, "win", Options::default()).await;
    assert_eq!(lines(&r), ["windows/amd64: index says os.version 10.0.20348.1, config says 10.0.17763.1"]);
}

#[tokio::test]
async fn verify_truncated_layer_shared_by_platforms_reported_once() {
    // Both platforms share the same layer, and both descriptors claim 1000 bytes more than are stored.
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let mut children = two();
    children[1].layers[0] = children[0].layers[0].clone();
    let damage = Damage {
        manifest: Some(Box::new(|_, m: &mut Value| {
            let size = m["layers"][0]["size"].as_u64().unwrap();
            m["layers"][0]["size"] = json!(size + 1000);
        })),
        ..Default::default()
    };
    store_image(&*store, "1.0", &children, &damage).await;
    let layer = Digest::sha256_of(&children[0].layers[0]);
    for deep in [false, true] {
        let r = run(store.clone(), "1.0", Options { deep, ..Default::default() }).await;
        assert_eq!(lines(&r), [format!("{layer}: layer size 1001, descriptor says 2001")], "deep={deep}");
    }
}

#[tokio::test]
async fn verify_missing_shared_layer_names_every_platform_once() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let mut children = two();
    children[1].layers[1] = children[0].layers[1].clone();
    let gone = children[0].layers[1].clone();
    let damage = Damage { skip_blob: vec![gone.clone()], ..Default::default() };
    store_image(&*store, "1.0", &children, &damage).await;
    let r = run(store, "1.0", Options::default()).await;
    let d = Digest::sha256_of(&gone);
    assert_eq!(lines(&r), [format!("missing layer {d} (linux/amd64, linux/arm64/v8)")]);
}

#[tokio::test]
async fn verify_wrong_size_in_index_entry_and_config_descriptor() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let damage = Damage {
        index: Some(Box::new(|i: &mut Value| {
            let size = i["manifests"][0]["size"].as_u64().unwrap();
            i["manifests"][0]["size"] = json!(size - 1);
        })),
        manifest: Some(Box::new(|i, m: &mut Value| {
            if i == 1 {
                m["config"]["size"] = json!(7);
            }
        })),
        ..Default::default()
    };
    let children = two();
    let (_, digests) = store_image(&*store, "1.0", &children, &damage).await;
    let r = run(store, "1.0", Options::default()).await;
    let stored = store_len(&digests[0], &r);
    let config = serde_json::to_vec(&children[1].config).unwrap();
    assert_eq!(
        lines(&r),
        [
            format!("{}: manifest size {stored}, descriptor says {}", digests[0], stored - 1),
            format!("{}: config size {}, descriptor says 7", Digest::sha256_of(&config), config.len()),
        ]
    );
}

fn store_len(_d: &Digest, r: &ImageReport) -> u64 {
    match &r.problems[0] {
        Problem::ManifestSize { actual, .. } => *actual,
        p => panic!("unexpected {p}"),
    }
}

#[tokio::test]
async fn verify_missing_required_platform() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    store_image(&*store, "1.0", &two(), &Damage::default()).await;
    let required = ["linux/amd64", "linux/arm64", "linux/s390x"].map(|s| PlatformSpec::parse(s).unwrap()).to_vec();
    let r = run(store.clone(), "1.0", Options { required: required.clone(), ..Default::default() }).await;
    assert_eq!(lines(&r), ["required platform linux/s390x is missing"]);

    // The pure check the [[tags]] rules share.
    let d = store.tag_get(&repo(), &"1.0".parse().unwrap()).await.unwrap().unwrap();
    let m = store.manifest_get(&repo(), &d).await.unwrap().unwrap();
    let oci::ManifestBody::Index(index) =
        oci::Manifest::parse(m.bytes, Some(&m.media_type), oci::Algorithm::Sha256).unwrap().body
    else {
        panic!("an index")
    };
    assert_eq!(missing_platforms(&index, &required), ["linux/s390x"]);
    assert!(missing_platforms(&index, &required[..2]).is_empty());
}

#[tokio::test]
async fn verify_buildx_attestations_and_referrers_are_not_platforms() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    // A buildx attestation manifest for the amd64 child, listed in the index.
    let children = two();
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#;
    let st = put_blob(&*store, statement).await;
    let empty = put_blob(&*store, b"{}").await;
    let att = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": empty.to_string(), "size": 2 },
        "layers": [{ "mediaType": "application/vnd.in-toto+json", "digest": st.to_string(), "size": statement.len() }],
    });
    let att_d = put_manifest(&*store, OCI_MANIFEST, &att).await;
    let (_, digests) = {
        // The child digests are deterministic: store once to learn them, then again with the attestation.
        let probe: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        store_image(&*probe, "x", &children, &Damage::default()).await
    };
    let amd = digests[0].clone();
    let entry = json!({
        "mediaType": OCI_MANIFEST, "digest": att_d.digest.to_string(), "size": att_d.size,
        "platform": { "os": "unknown", "architecture": "unknown" },
        "annotations": { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd.to_string() },
    });
    let damage = Damage {
        index: Some(Box::new(move |i: &mut Value| i["manifests"].as_array_mut().unwrap().push(entry.clone()))),
        ..Default::default()
    };
    store_image(&*store, "1.0", &children, &damage).await;
    // A cosign-style signature referrer of the arm64 child.
    let sig = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2 },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": digests[1].to_string(), "size": 1 },
    });
    let sig_d = put_manifest(&*store, OCI_MANIFEST, &sig).await;

    let required = ["linux/amd64", "linux/arm64"].map(|s| PlatformSpec::parse(s).unwrap()).to_vec();
    let r = run(store, "1.0", Options { required, ..Default::default() }).await;
    assert!(r.ok, "{:?}", lines(&r));
    assert_eq!(r.platforms.len(), 2, "the attestation manifest is not a platform");
    assert_eq!(r.platforms[0].attestations.len(), 1);
    assert_eq!(r.platforms[0].attestations[0].digest, att_d.digest);
    assert_eq!(r.platforms[0].attestations[0].source, "index");
    assert_eq!(r.platforms[1].signatures.len(), 1);
    assert_eq!(r.platforms[1].signatures[0].digest, sig_d.digest);
    assert!(r.platforms[1].attestations.is_empty());
}

#[tokio::test]
async fn verify_missing_attestation_blob_is_reported_against_its_platform() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let children = two();
    let (_, digests) = {
        let probe: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        store_image(&*probe, "x", &children, &Damage::default()).await
    };
    let statement = b"not stored";
    let empty = put_blob(&*store, b"{}").await;
    let att = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": empty.to_string(), "size": 2 },
        "layers": [{ "mediaType": "application/vnd.in-toto+json", "digest": Digest::sha256_of(statement).to_string(), "size": statement.len() }],
    });
    let att_d = put_manifest(&*store, OCI_MANIFEST, &att).await;
    let entry = json!({
        "mediaType": OCI_MANIFEST, "digest": att_d.digest.to_string(), "size": att_d.size,
        "platform": { "os": "unknown", "architecture": "unknown" },
        "annotations": { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": digests[1].to_string() },
    });
    let damage = Damage {
        index: Some(Box::new(move |i: &mut Value| i["manifests"].as_array_mut().unwrap().push(entry.clone()))),
        ..Default::default()
    };
    store_image(&*store, "1.0", &children, &damage).await;
    let r = run(store, "1.0", Options::default()).await;
    assert_eq!(lines(&r), [format!("missing layer {} (attestation of linux/arm64/v8)", Digest::sha256_of(statement))]);
}

#[tokio::test]
async fn verify_non_distributable_layer_with_urls_may_be_absent() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let foreign = b"windows base layer".to_vec();
    let damage = Damage {
        manifest: Some(Box::new(|_, m: &mut Value| {
            let f = b"windows base layer";
            m["layers"].as_array_mut().unwrap().push(json!({
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "digest": Digest::sha256_of(f).to_string(), "size": f.len(),
                "urls": ["https://mcr.microsoft.com/v2/windows/blobs/x"],
            }));
        })),
        ..Default::default()
    };
    store_image(&*store, "1.0", &two(), &damage).await;
    assert!(store.blob_stat(&Digest::sha256_of(&foreign)).await.unwrap().is_none());
    let r = run(store, "1.0", Options::default()).await;
    assert!(r.ok, "{:?}", lines(&r));
}

#[tokio::test]
async fn verify_unknown_tag_is_one_problem() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    let r = run(store, "nope", Options::default()).await;
    assert_eq!(lines(&r), ["team/app:nope: not found"]);
}

#[tokio::test]
async fn verify_deep_finds_a_flipped_byte_in_an_fs_blob_file() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ContentStore> = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
    let children = two();
    store_image(&*store, "1.0", &children, &Damage::default()).await;
    let layer = Digest::sha256_of(&children[1].layers[0]);
    let path = crate::store::keys::Layout::new(dir.path()).blob(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[500] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let shallow = run(store.clone(), "1.0", Options::default()).await;
    assert!(shallow.ok, "sizes still agree: {:?}", lines(&shallow));
    let deep = run(store.clone(), "1.0", Options { deep: true, parallelism: 2, ..Default::default() }).await;
    assert_eq!(lines(&deep), [format!("{layer}: layer content hashes to {}", Digest::sha256_of(&bytes))]);

    // The JSON names the kind of each problem.
    let json = serde_json::to_string(&deep).unwrap();
    assert!(json.contains(r#""kind":"blob_digest""#), "{json}");
    assert!(json.contains(r#""ok":false"#));
}

#[tokio::test]
async fn verify_all_walks_every_repository_and_tag() {
    let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
    store_image(&*store, "1.0", &two(), &Damage::default()).await;
    let mut bad = two();
    bad[0].config["architecture"] = json!("riscv64");
    store_image(&*store, "2.0", &bad, &Damage::default()).await;
    let v = Verifier::new(Source::Store(store), Options::default());
    let all = verify_all(&v).await.unwrap();
    let refs: Vec<&str> = all.iter().map(|r| r.reference.as_str()).collect();
    assert_eq!(refs, ["team/app:1.0", "team/app:2.0"]);
    assert_eq!(super::lines(&all), ["team/app:2.0: linux/amd64: config says linux/riscv64"]);
    assert!(!Report::new(all).ok);
}

#[test]
fn verify_parses_targets_and_paths() {
    let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(
        parse_target("a/b:1.0").unwrap(),
        Target::One("a/b".parse().unwrap(), RefSpec::Tag("1.0".parse().unwrap()))
    );
    assert_eq!(
        parse_target(&format!("a/b@{d}")).unwrap(),
        Target::One("a/b".parse().unwrap(), RefSpec::Digest(d.parse().unwrap()))
    );
    assert_eq!(
        parse_target("docker.io/library/alpine").unwrap(),
        Target::Repo("docker.io/library/alpine".parse().unwrap())
    );
    assert!(parse_target("a/b:").is_err());
    assert!(parse_target("A:1").is_err());
    let (repo, r) = parse_path(&format!("docker.io/library/alpine/{d}")).unwrap();
    assert_eq!((repo.as_str(), r), ("docker.io/library/alpine", RefSpec::Digest(d.parse().unwrap())));
    let (repo, r) = parse_path("team/app/1.0").unwrap();
    assert_eq!((repo.as_str(), r.to_string().as_str()), ("team/app", "1.0"));
    assert!(parse_path("justrepo").is_err());
}

#[tokio::test]
async fn verify_corrupted_child_manifest_file_is_one_problem() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ContentStore> = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
    let (_, digests) = store_image(&*store, "1.0", &two(), &Damage::default()).await;
    let path = dir.path().join("repos/team/app/_manifests/sha256").join(digests[0].hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(b' ');
    std::fs::write(&path, &bytes).unwrap();
    let body = &bytes[bytes.iter().position(|b| *b == b'\n').unwrap() + 1..];
    let r = run(store, "1.0", Options::default()).await;
    assert_eq!(lines(&r), [format!("{}: manifest bytes hash to {}", digests[0], Digest::sha256_of(body))]);
}
