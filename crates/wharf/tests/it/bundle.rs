//! Air-gap bundles end to end: `wharf bundle export` from a store beside a running server, read by skopeo
//! (`oci-archive:`) and umoci (`umoci ls`); `wharf bundle import` into a fresh store (every digest checked, pinned, served
//! whole with its referrers), and into another registry over HTTP; a skopeo-written archive imported with `--to`; a flipped byte refused; a tag
//! that would move refused without `--force`; a platform subset.

use std::path::Path;
use std::process::Command;

use oci::Digest;

use crate::common::{Client, Server};
use crate::images::{multi_arch, Image, PLATFORMS};

fn wharf(args: &[&str]) -> std::process::Output {
    crate::common::wharf_cli(args)
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(args: &[&str]) -> String {
    let out = wharf(args);
    assert!(out.status.success(), "wharf {args:?}: {}", text(&out));
    text(&out)
}

async fn pulls_whole(c: &Client, repo: &str, reference: &str, image: &Image) -> Result<(), String> {
    image.pull_whole(c, repo, reference).await
}

fn skopeo(args: &[&str]) -> std::process::Output {
    crate::external::require_tool("skopeo", "skopeo").args(args).output().unwrap()
}

/// Byte offset of `needle` in the file.
fn find(path: &Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).position(|w| w == needle).expect("bytes present in the bundle")
}

#[tokio::test]
async fn export_then_import_across_the_gap_with_skopeo_reading_the_bundle() {
    let a = Server::start();
    let c = a.client();
    let app = multi_arch(8100, &PLATFORMS[..3], false, 48 * 1024);
    let lib = multi_arch(8101, &PLATFORMS[..2], true, 32 * 1024);
    app.push(&c, "team/app", "v1").await;
    lib.push(&c, "team/lib", "2.0").await;
    let sig = crate::isolation::push_referrer(&c, "team/app", &app.index, "application/vnd.example.signature").await;

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.tar");
    let (a_data, b_path) = (a.data_dir.to_str().unwrap(), bundle.to_str().unwrap());
    // Beside the running server: the store is read, never locked or written.
    let out = ok(&["bundle", "export", "team/app:v1", "team/lib:2.0", "-o", b_path, "--data-dir", a_data]);
    assert!(out.contains("team/app:v1") && out.contains("1 referrers"), "{out}");
    assert!(out.contains("linux/amd64") && out.contains("2 images"), "{out}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file stays: {leftovers:?}");

    // skopeo reads it as an OCI archive, every platform, digests checked.
    let archive = format!("oci-archive:{b_path}:team/app:v1");
    let raw = skopeo(&["inspect", "--raw", &archive]);
    assert!(raw.status.success(), "{}", text(&raw));
    assert_eq!(Digest::sha256_of(&raw.stdout), app.index.digest, "the index bytes are exact");
    let copied = dir.path().join("copied");
    let out = skopeo(&["copy", "--all", "--quiet", &archive, &format!("oci:{}:x", copied.to_str().unwrap())]);
    assert!(out.status.success(), "skopeo copy --all from the bundle: {}", text(&out));

    // umoci reads the layout (unpacked by tar) and finds both images by name.
    let unpacked = dir.path().join("layout");
    std::fs::create_dir(&unpacked).unwrap();
    let t = Command::new("tar").args(["-xf", b_path, "-C", unpacked.to_str().unwrap()]).output().unwrap();
    assert!(t.status.success(), "{}", text(&t));
    let ls = crate::external::require_tool("umoci", "umoci")
        .args(["ls", "--layout", unpacked.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ls.status.success(), "{}", text(&ls));
    let mut names: Vec<String> = String::from_utf8_lossy(&ls.stdout).lines().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["team/app:v1", "team/lib:2.0"]);

    // Into a fresh store on the other side.
    let other = dir.path().join("other");
    let o = other.to_str().unwrap();
    let out = ok(&["bundle", "import", b_path, "--data-dir", o]);
    assert!(out.contains("team/app:v1") && out.contains("team/lib:2.0"), "{out}");
    let b = Server::start_with(&other, &[]);
    let bc = b.client();
    pulls_whole(&bc, "team/app", "v1", &app).await.unwrap();
    pulls_whole(&bc, "team/lib", "2.0", &lib).await.unwrap();
    let refs = bc.get(&format!("/v2/team/app/referrers/{}", app.index.digest)).await.json();
    assert_eq!(refs["manifests"][0]["digest"], sig.to_string(), "the signature came along: {refs}");
    // Pinned: a collection with no grace keeps all of it.
    ok(&["gc", "--grace", "0s", "--data-dir", o]);
    pulls_whole(&bc, "team/app", "v1", &app).await.unwrap();
    let pin = other.join("meta/pins/team/app");
    assert!(pin.is_dir(), "pins recorded under {}", pin.display());

    // Importing again is a no-op; a bundle whose tag would move is refused without --force.
    let out = ok(&["bundle", "import", b_path, "--data-dir", o]);
    assert!(out.contains("0 blobs written"), "{out}");
    let newer = multi_arch(8102, &PLATFORMS[..1], false, 8 * 1024);
    newer.push(&c, "team/app", "v1").await;
    let bundle2 = dir.path().join("b2.tar");
    ok(&["bundle", "export", "team/app:v1", "-o", bundle2.to_str().unwrap(), "--data-dir", a_data]);
    let refused = wharf(&["bundle", "import", bundle2.to_str().unwrap(), "--data-dir", o]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("team/app:v1 points at") && text(&refused).contains("--force"),
        "{}",
        text(&refused)
    );
    pulls_whole(&bc, "team/app", "v1", &app).await.unwrap();
    ok(&["bundle", "import", bundle2.to_str().unwrap(), "--data-dir", o, "--force"]);
    pulls_whole(&bc, "team/app", "v1", &newer).await.unwrap();

    // Into a registry over HTTP (--server), with a prefix.
    let remote = Server::start();
    let out = ok(&["bundle", "import", b_path, "--server", &remote.url, "--to", "gap"]);
    assert!(out.contains("gap/team/app:v1"), "{out}");
    pulls_whole(&remote.client(), "gap/team/app", "v1", &app).await.unwrap();
    pulls_whole(&remote.client(), "gap/team/lib", "2.0", &lib).await.unwrap();
    let refs = remote.client().get(&format!("/v2/gap/team/app/referrers/{}", app.index.digest)).await.json();
    assert_eq!(refs["manifests"][0]["digest"], sig.to_string(), "{refs}");
}

#[tokio::test]
async fn a_flipped_byte_is_refused_and_nothing_is_tagged() {
    let a = Server::start();
    let c = a.client();
    let app = multi_arch(8200, &PLATFORMS[..2], false, 64 * 1024);
    app.push(&c, "team/app", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.tar");
    let b_path = bundle.to_str().unwrap();
    ok(&["bundle", "export", "team/app:v1", "-o", b_path, "--data-dir", a.data_dir.to_str().unwrap()]);
    // Flip one byte in the middle of the largest layer.
    let layer = app.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap();
    let at = find(&bundle, &layer.bytes[1000..1064]) + 10;
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&bundle, &bytes).unwrap();

    let other = dir.path().join("other");
    let out = wharf(&["bundle", "import", b_path, "--data-dir", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains(&layer.digest.to_string()), "the error names the blob: {}", text(&out));
    let b = Server::start_with(&other, &[]);
    assert_eq!(b.client().get("/v2/team/app/manifests/v1").await.status, 404, "nothing tagged");
    assert_eq!(b.client().get(&format!("/v2/team/app/blobs/{}", layer.digest)).await.status, 404);
}

#[tokio::test]
async fn a_skopeo_archive_imports_with_to_and_a_platform_subset_exports() {
    let a = Server::start();
    let c = a.client();
    let app = multi_arch(8300, &PLATFORMS[..3], false, 16 * 1024);
    app.push(&c, "team/app", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("s.tar");
    let out = skopeo(&[
        "copy",
        "--all",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/team/app:v1", a.addr),
        &format!("oci-archive:{}:v1", archive.to_str().unwrap()),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let other = dir.path().join("other");
    let o = other.to_str().unwrap();
    let needs_to = wharf(&["bundle", "import", archive.to_str().unwrap(), "--data-dir", o]);
    assert!(!needs_to.status.success() && text(&needs_to).contains("--to"), "{}", text(&needs_to));
    ok(&["bundle", "import", archive.to_str().unwrap(), "--data-dir", o, "--to", "vendor/app"]);
    // What skopeo wrote (it may re-encode the index) is what Wharf serves, and skopeo pulls it whole.
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{}:v1", archive.to_str().unwrap())]);
    assert!(raw.status.success(), "{}", text(&raw));
    let b = Server::start_with(&other, &[]);
    let r = b.client().get("/v2/vendor/app/manifests/v1").await;
    assert_eq!(r.status, 200);
    assert_eq!(Digest::sha256_of(&r.body), Digest::sha256_of(&raw.stdout), "the archive's index, byte for byte");
    let back = dir.path().join("back");
    let out = skopeo(&[
        "copy",
        "--all",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/vendor/app:v1", b.addr),
        &format!("oci:{}:x", back.to_str().unwrap()),
    ]);
    assert!(out.status.success(), "skopeo pulls the imported image whole: {}", text(&out));
    drop(b);

    // Only linux/amd64: the index stays whole (its digest is the image's), the other platforms stay home.
    let subset = dir.path().join("amd64.tar");
    let out = ok(&[
        "bundle",
        "export",
        "team/app:v1",
        "--platform",
        "linux/amd64",
        "-o",
        subset.to_str().unwrap(),
        "--data-dir",
        a.data_dir.to_str().unwrap(),
    ]);
    assert!(out.contains("[linux/amd64]"), "{out}");
    let index: serde_json::Value = serde_json::from_slice(&app.index.bytes).unwrap();
    let bytes = std::fs::read(&subset).unwrap();
    let holds = |d: &str| {
        let path = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        bytes.windows(path.len()).any(|w| w == path.as_bytes())
    };
    assert!(holds(&app.index.digest.to_string()), "the index itself is carried");
    let mut carried = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let d = m["digest"].as_str().unwrap();
        assert_eq!(holds(d), arch == "amd64", "{arch} manifest carried only for amd64");
        carried.push(arch.to_owned());
    }
    assert_eq!(carried.len(), 3);
}

#[tokio::test]
async fn an_incremental_bundle_carries_only_what_the_other_side_lacks() {
    let a = Server::start();
    let c = a.client();
    let app = multi_arch(8400, &PLATFORMS[..2], false, 32 * 1024);
    let lib = multi_arch(8401, &PLATFORMS[..2], false, 32 * 1024);
    app.push(&c, "team/app", "v1").await;
    lib.push(&c, "team/lib", "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("1.tar"), dir.path().join("2.tar"));
    let d = a.data_dir.to_str().unwrap();
    ok(&["bundle", "export", "team/app:v1", "-o", first.to_str().unwrap(), "--data-dir", d]);
    let out = ok(&[
        "bundle",
        "export",
        "team/app:v1",
        "team/lib:1.0",
        "--since",
        first.to_str().unwrap(),
        "-o",
        second.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(out.contains(&format!("{} blobs left out", app.blobs.len())), "{out}");
    assert!(
        std::fs::metadata(&second).unwrap().len() < std::fs::metadata(&first).unwrap().len() + 40 * 1024 * 2,
        "the second bundle carries lib's layers, not app's again"
    );

    // Alone, the increment cannot be imported: it says which blobs it lacks and tags nothing.
    let fresh = dir.path().join("fresh");
    let refused = wharf(&["bundle", "import", second.to_str().unwrap(), "--data-dir", fresh.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("lacks") && text(&refused).contains(&app.blobs[0].digest.to_string()),
        "{}",
        text(&refused)
    );

    // After the first, it completes the set.
    let other = dir.path().join("other");
    let o = other.to_str().unwrap();
    ok(&["bundle", "import", first.to_str().unwrap(), "--data-dir", o]);
    ok(&["bundle", "import", second.to_str().unwrap(), "--data-dir", o]);
    let b = Server::start_with(&other, &[]);
    pulls_whole(&b.client(), "team/app", "v1", &app).await.unwrap();
    pulls_whole(&b.client(), "team/lib", "1.0", &lib).await.unwrap();
}

#[tokio::test]
async fn export_refuses_a_blob_that_rotted_in_the_store_and_writes_no_file() {
    let a = Server::start();
    let app = multi_arch(8500, &PLATFORMS[..1], false, 64 * 1024);
    app.push(&a.client(), "team/app", "v1").await;
    let layer = app.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap();
    let pool = a.data_dir.join("blobs/sha256").join(&layer.digest.hex()[..2]).join(layer.digest.hex());
    let mut bytes = std::fs::read(&pool).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&pool, bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("b.tar");
    let out = wharf(&[
        "bundle",
        "export",
        "team/app:v1",
        "-o",
        out_path.to_str().unwrap(),
        "--data-dir",
        a.data_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains(&layer.digest.to_string()), "{}", text(&out));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "neither the bundle nor a temporary file");
}
