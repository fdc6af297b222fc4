//! Real third-party client: skopeo (containers/image) pushing and pulling multi-arch images through Wharf.
//! `scripts/test.sh` installs skopeo; without it these tests fail rather than pass vacuously.

use std::path::Path;
use std::process::Command;

use crate::common::Server;
use crate::images::{multi_arch, Image, PLATFORMS};

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo is required for this test (scripts/test.sh installs it): {e}"));
    assert!(out.status.success(), "skopeo {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Every blob and manifest of `img` is present, byte for byte, in the OCI layout at `dir`.
fn assert_layout_has(dir: &Path, img: &Image) {
    for c in img.blobs.iter().chain(&img.manifests).chain([&img.index]) {
        let got = std::fs::read(dir.join("blobs/sha256").join(c.digest.hex()))
            .unwrap_or_else(|e| panic!("{} missing from the pulled layout: {e}", c.digest));
        assert_eq!(got, c.bytes, "{} differs", c.digest);
    }
}

#[tokio::test]
async fn skopeo_round_trips_an_oci_index_byte_identical() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let img = multi_arch(21, PLATFORMS, false, 50_000);
    img.write_oci_layout(&src, "v1");
    let dest = format!("docker://{}/skopeo/oci:v1", s.addr);
    let (src_ref, out_dir) = (format!("oci:{}:v1", src.display()), tmp.path().join("out"));
    let out_ref = format!("oci:{}:v1", out_dir.display());
    tokio::task::spawn_blocking(move || {
        skopeo(&["copy", "--all", "--preserve-digests", "--dest-tls-verify=false", &src_ref, &dest]);
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &dest]);
        skopeo(&["copy", "--all", "--preserve-digests", "--src-tls-verify=false", &dest, &out_ref]);
        raw
    })
    .await
    .map(|raw| assert_eq!(raw, img.index.bytes, "inspect --raw returns the exact index bytes"))
    .unwrap();
    assert_layout_has(&out_dir, &img);
    // And what Wharf stored is what skopeo sent.
    let r = s.client().get("/v2/skopeo/oci/manifests/v1").await;
    assert_eq!(&r.body[..], &img.index.bytes[..]);
}

#[tokio::test]
async fn skopeo_copies_a_docker_manifest_list_between_repositories() {
    let s = Server::start();
    let img = multi_arch(22, PLATFORMS, true, 20_000);
    img.push(&s.client(), "skopeo/docker-src", "v1").await;
    let src = format!("docker://{}/skopeo/docker-src:v1", s.addr);
    let dst = format!("docker://{}/skopeo/docker-dst:v1", s.addr);
    let tmp = tempfile::tempdir().unwrap();
    let out = format!("dir:{}", tmp.path().join("dir").display());
    let (raw_src, raw_dst) = tokio::task::spawn_blocking(move || {
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &src,
            &dst,
        ]);
        let raw_src = skopeo(&["inspect", "--raw", "--tls-verify=false", &src]);
        let raw_dst = skopeo(&["inspect", "--raw", "--tls-verify=false", &dst]);
        skopeo(&["copy", "--all", "--preserve-digests", "--src-tls-verify=false", &dst, &out]);
        (raw_src, raw_dst)
    })
    .await
    .unwrap();
    assert_eq!(raw_src, img.index.bytes);
    assert_eq!(raw_dst, img.index.bytes);
    // dir: keeps each blob under its hex digest
    for b in &img.blobs {
        let got = std::fs::read(tmp.path().join("dir").join(b.digest.hex())).unwrap();
        assert_eq!(got, b.bytes);
    }
    let c = s.client();
    for m in &img.manifests {
        let r = c.get(&format!("/v2/skopeo/docker-dst/manifests/{}", m.digest)).await;
        assert_eq!(&r.body[..], &m.bytes[..]);
        assert_eq!(r.header("content-type"), Some(m.media_type.clone()));
    }
}
