//! Real OCI clients (`../shared/clients/`: crane, oras, regctl) against the real binary: pushes, copies
//! between two Wharfs, listings, deletes, artifacts with referrers, and a pull through the mirror.
//!
//! Each test gives the clients their own HOME and DOCKER_CONFIG, so no user credential or setting is read.
//! Skipped (with a message) when `../shared/clients` is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use oci::Digest;
use reqwest::Method;

use crate::common::{die_with_parent, shared_path, Server};
use crate::images::noise;

/// The three client binaries and a private HOME for them.
struct Clients {
    dir: PathBuf,
    home: tempfile::TempDir,
}

impl Clients {
    fn find() -> Option<Clients> {
        let dir = shared_path("clients")?;
        if !["crane", "oras", "regctl"].iter().all(|c| dir.join(c).is_file()) {
            return None;
        }
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".docker")).unwrap();
        Some(Clients { dir, home })
    }

    fn work(&self) -> &Path {
        self.home.path()
    }

    /// Run `tool args…` in the private HOME (also the working directory); returns its output.
    fn try_run(&self, tool: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.dir.join(tool));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("DOCKER_CONFIG", self.home.path().join(".docker"))
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", self.home.path())
            .current_dir(self.home.path())
            .stdin(Stdio::null());
        die_with_parent(&mut cmd);
        cmd.output().unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// [`Clients::try_run`] that must succeed; returns stdout.
    fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = self.try_run(tool, args);
        assert!(
            out.status.success(),
            "{tool} {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// [`Clients::try_run`] that must fail; returns stdout and stderr.
    fn fails(&self, tool: &str, args: &[&str]) -> String {
        let out = self.try_run(tool, args);
        assert!(
            !out.status.success(),
            "{tool} {} succeeded but must fail: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    fn crane(&self, args: &[&str]) -> String {
        let mut a = vec!["--insecure"];
        a.extend_from_slice(args);
        self.run("crane", &a)
    }

    /// Tell regctl that these registries speak plain HTTP.
    fn regctl_plain_http(&self, servers: &[&Server]) {
        for s in servers {
            self.run("regctl", &["registry", "set", &s.addr, "--tls", "disabled"]);
        }
    }

    /// A layer tarball with one file of `size` pseudo-random bytes; returns its path.
    fn layer_tar(&self, name: &str, seed: u64, size: usize) -> PathBuf {
        let src = self.work().join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join(format!("{name}.bin")), noise(seed, size)).unwrap();
        let tar = self.work().join(format!("{name}.tar"));
        let out = Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .output()
            .expect("tar");
        assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
        tar
    }
}

macro_rules! clients_or_skip {
    () => {
        match Clients::find() {
            Some(c) => c,
            None => {
                println!("skipped: ../shared/clients not found (crane, oras, regctl)");
                return;
            }
        }
    };
}

/// The digest `GET /v2/<repo>/manifests/<reference>` answers with (any manifest type).
async fn served_digest(s: &Server, repo: &str, reference: &str) -> Option<String> {
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json";
    let r =
        s.client().req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"), &[("accept", accept)], None).await;
    (r.status == 200).then(|| {
        let d = Digest::sha256_of(&r.body).to_string();
        assert_eq!(r.header("docker-content-digest").as_deref(), Some(d.as_str()));
        d
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crane_pushes_copies_lists_and_deletes() {
    let c = clients_or_skip!();
    let a = Server::start();
    let b = Server::start();
    let (ha, hb) = (a.addr.clone(), b.addr.clone());
    let l1 = c.layer_tar("one", 1, 300_000);
    let l2 = c.layer_tar("two", 2, 50_000);

    // Build and push a two-layer image (base + app), plus a second tag.
    c.crane(&["append", "-f", l1.to_str().unwrap(), "-t", &format!("{ha}/team/base:1"), "--oci-empty-base"]);
    c.crane(&[
        "append",
        "-b",
        &format!("{ha}/team/base:1"),
        "-f",
        l2.to_str().unwrap(),
        "-t",
        &format!("{ha}/team/app:1"),
    ]);
    c.crane(&["tag", &format!("{ha}/team/app:1"), "latest"]);
    let digest = c.crane(&["digest", &format!("{ha}/team/app:1")]).trim().to_owned();
    assert_eq!(served_digest(&a, "team/app", "1").await.as_deref(), Some(digest.as_str()));
    let mut tags: Vec<String> = c.crane(&["ls", &format!("{ha}/team/app")]).lines().map(String::from).collect();
    tags.sort();
    assert_eq!(tags, ["1", "latest"]);
    let catalog = c.crane(&["catalog", &ha]);
    assert_eq!(catalog.lines().collect::<Vec<_>>(), ["team/app", "team/base"]);
    // crane validates every layer against its digest as it pulls.
    let tarball = c.work().join("app.tar");
    c.crane(&["pull", &format!("{ha}/team/app:1"), tarball.to_str().unwrap()]);
    assert!(std::fs::metadata(&tarball).unwrap().len() > 350_000);

    // Copy to the second Wharf (cross-registry) and inside the first (cross-repository mount).
    c.crane(&["copy", &format!("{ha}/team/app:1"), &format!("{hb}/mirror/app:1")]);
    c.crane(&["copy", &format!("{ha}/team/app:1"), &format!("{ha}/other/app:1")]);
    assert_eq!(c.crane(&["digest", &format!("{hb}/mirror/app:1")]).trim(), digest);
    assert_eq!(c.crane(&["digest", &format!("{ha}/other/app:1")]).trim(), digest);
    let config_a = c.crane(&["config", &format!("{ha}/team/app:1")]);
    assert_eq!(c.crane(&["config", &format!("{hb}/mirror/app:1")]), config_a);

    // Delete by digest: both tags go with the manifest.
    c.crane(&["delete", &format!("{ha}/team/app@{digest}")]);
    c.fails("crane", &["--insecure", "digest", &format!("{ha}/team/app:1")]);
    assert_eq!(served_digest(&a, "team/app", &digest).await, None);
    assert_eq!(c.crane(&["ls", &format!("{ha}/team/app")]).trim(), "");
    // The copies are untouched.
    assert_eq!(c.crane(&["digest", &format!("{ha}/other/app:1")]).trim(), digest);
    assert_eq!(c.crane(&["digest", &format!("{hb}/mirror/app:1")]).trim(), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pushes_attaches_discovers_and_pulls_artifacts() {
    let c = clients_or_skip!();
    let s = Server::start();
    let h = s.addr.clone();
    let reference = format!("{h}/team/artifact:v1");
    std::fs::write(c.work().join("payload.txt"), b"wharf artifact payload\n").unwrap();
    std::fs::write(c.work().join("sig.txt"), b"pretend signature\n").unwrap();
    std::fs::write(c.work().join("sbom.json"), br#"{"packages":[]}"#).unwrap();

    let out = c.run(
        "oras",
        &[
            "push",
            "--plain-http",
            "--artifact-type",
            "application/vnd.wharf.test",
            &reference,
            "payload.txt:text/plain",
        ],
    );
    assert!(out.contains("Pushed"), "{out}");
    let subject = served_digest(&s, "team/artifact", "v1").await.expect("artifact manifest");

    for (file, ty) in [
        ("sig.txt:text/plain", "application/vnd.wharf.signature"),
        ("sbom.json:application/json", "application/spdx+json"),
    ] {
        c.run("oras", &["attach", "--plain-http", "--artifact-type", ty, &reference, file]);
    }
    // The referrers, as Wharf lists them.
    let r = s.client().get(&format!("/v2/team/artifact/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    let listed = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let digest_of = |ty: &str| {
        listed.iter().find(|m| m["artifactType"] == ty).unwrap_or_else(|| panic!("{ty} in {listed:?}"))["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (sig, sbom) = (digest_of("application/vnd.wharf.signature"), digest_of("application/spdx+json"));

    // oras discover finds both, and only the asked type with --artifact-type.
    let all = c.run("oras", &["discover", "--plain-http", "--format", "json", &reference]);
    assert!(all.contains(&sig) && all.contains(&sbom), "{all}");
    let only = c.run(
        "oras",
        &["discover", "--plain-http", "--format", "json", "--artifact-type", "application/spdx+json", &reference],
    );
    assert!(only.contains(&sbom) && !only.contains(&sig), "{only}");
    let none = c.run(
        "oras",
        &["discover", "--plain-http", "--format", "json", "--artifact-type", "application/vnd.none", &reference],
    );
    assert!(!none.contains(&sbom) && !none.contains(&sig), "{none}");

    // Pull the artifact and a referrer back.
    c.run("oras", &["pull", "--plain-http", "-o", "out", &reference]);
    assert_eq!(std::fs::read(c.work().join("out/payload.txt")).unwrap(), b"wharf artifact payload\n");
    c.run("oras", &["pull", "--plain-http", "-o", "sig-out", &format!("{h}/team/artifact@{sig}")]);
    assert_eq!(std::fs::read(c.work().join("sig-out/sig.txt")).unwrap(), b"pretend signature\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regctl_copies_with_referrers_lists_and_checks_base() {
    let c = clients_or_skip!();
    let a = Server::start();
    let b = Server::start();
    c.regctl_plain_http(&[&a, &b]);
    let (ha, hb) = (a.addr.clone(), b.addr.clone());
    let base_layer = c.layer_tar("base", 11, 200_000);
    let app_layer = c.layer_tar("app", 12, 30_000);
    c.crane(&["append", "-f", base_layer.to_str().unwrap(), "-t", &format!("{ha}/lib/base:1"), "--oci-empty-base"]);
    c.crane(&[
        "append",
        "-b",
        &format!("{ha}/lib/base:1"),
        "--set-base-image-annotations",
        "-f",
        app_layer.to_str().unwrap(),
        "-t",
        &format!("{ha}/team/app:1"),
    ]);
    std::fs::write(c.work().join("sig.txt"), b"sig").unwrap();
    c.run(
        "oras",
        &[
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/vnd.wharf.signature",
            &format!("{ha}/team/app:1"),
            "sig.txt:text/plain",
        ],
    );

    // The app is built on the current base; after the base moves, check-base says so (non-zero exit).
    // By the layers (`--base`) and by the base annotations crane wrote (name and digest).
    c.run("regctl", &["image", "check-base", &format!("{ha}/team/app:1"), "--base", &format!("{ha}/lib/base:1")]);
    c.run("regctl", &["image", "check-base", &format!("{ha}/team/app:1")]);

    // Copy with referrers to the other Wharf.
    c.run("regctl", &["image", "copy", "--referrers", &format!("{ha}/team/app:1"), &format!("{hb}/copy/app:1")]);
    let digest = c.run("regctl", &["image", "digest", &format!("{ha}/team/app:1")]).trim().to_owned();
    assert_eq!(c.run("regctl", &["image", "digest", &format!("{hb}/copy/app:1")]).trim(), digest);
    let raw_a = c.run("regctl", &["manifest", "get", "--format", "raw-body", &format!("{ha}/team/app:1")]);
    let raw_b = c.run("regctl", &["manifest", "get", "--format", "raw-body", &format!("{hb}/copy/app:1")]);
    assert_eq!(raw_a, raw_b);
    assert_eq!(Digest::sha256_of(raw_b.as_bytes()).to_string(), digest);
    assert_eq!(c.run("regctl", &["tag", "ls", &format!("{hb}/copy/app")]).trim(), "1");
    let refs = c.run(
        "regctl",
        &[
            "artifact",
            "list",
            "--filter-artifact-type",
            "application/vnd.wharf.signature",
            "--format",
            "{{range .Descriptors}}{{.Digest}} {{end}}",
            &format!("{hb}/copy/app:1"),
        ],
    );
    assert_eq!(refs.split_whitespace().count(), 1, "the signature came along: {refs:?}");
    let sig = refs.trim().to_owned();
    let body = c.run("regctl", &["artifact", "get", &format!("{hb}/copy/app@{sig}")]);
    assert_eq!(body, "sig");

    // Move the base: the app is now out of date.
    let new_base = c.layer_tar("base2", 13, 10_000);
    c.crane(&["append", "-f", new_base.to_str().unwrap(), "-t", &format!("{ha}/lib/base:1"), "--oci-empty-base"]);
    let err =
        c.fails("regctl", &["image", "check-base", &format!("{ha}/team/app:1"), "--base", &format!("{ha}/lib/base:1")]);
    assert!(err.contains("changed"), "{err}");
    let err = c.fails("regctl", &["image", "check-base", &format!("{ha}/team/app:1")]);
    assert!(err.contains("changed"), "{err}");

    // Delete a tag through regctl.
    c.run("regctl", &["tag", "delete", &format!("{hb}/copy/app:1")]);
    assert_eq!(c.run("regctl", &["tag", "ls", &format!("{hb}/copy/app")]).trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crane_pulls_through_the_mirror_by_path_prefix() {
    let c = clients_or_skip!();
    let upstream = Server::start();
    let hu = upstream.addr.clone();
    let layer = c.layer_tar("up", 21, 400_000);
    c.crane(&["append", "-f", layer.to_str().unwrap(), "-t", &format!("{hu}/library/demo:v1"), "--oci-empty-base"]);
    let digest = c.crane(&["digest", &format!("{hu}/library/demo:v1")]).trim().to_owned();
    let mirror = Server::start_config(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{0}\"\ndefault = true\n\n\
         [[upstream]]\nname = \"quay.io\"\nurl = \"{0}\"\n",
        upstream.url
    ));
    let hm = mirror.addr.clone();

    for name in ["docker.io/library/demo", "docker.io/demo", "quay.io/library/demo", "library/demo"] {
        assert_eq!(c.crane(&["digest", &format!("{hm}/{name}:v1")]).trim(), digest, "{name}");
    }
    let tarball = c.work().join("demo.tar");
    c.crane(&["pull", &format!("{hm}/docker.io/library/demo:v1"), tarball.to_str().unwrap()]);
    assert_eq!(
        c.crane(&["config", &format!("{hm}/docker.io/library/demo:v1")]),
        c.crane(&["config", &format!("{hu}/library/demo:v1")])
    );
    assert_eq!(c.crane(&["ls", &format!("{hm}/docker.io/library/demo")]).trim(), "v1");

    // Mirrored names are read-only to clients, and a copy out of the mirror into a hosted name works.
    let err = c.fails("crane", &["--insecure", "tag", &format!("{hm}/docker.io/library/demo:v1"), "v2"]);
    assert!(err.contains("DENIED"), "{err}");
    c.crane(&["copy", &format!("{hm}/docker.io/library/demo:v1"), &format!("{hm}/team/demo:v1")]);
    assert_eq!(c.crane(&["digest", &format!("{hm}/team/demo:v1")]).trim(), digest);

    // With the upstream gone, the cached image still pulls.
    drop(upstream);
    let again = c.work().join("again.tar");
    c.crane(&["pull", &format!("{hm}/docker.io/library/demo:v1"), again.to_str().unwrap()]);
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&tarball).unwrap());
}
