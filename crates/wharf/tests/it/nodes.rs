//! `wharf nodes config|apply` and `/_wharf/nodes/<format>` against real runtimes: containerd pulls through the
//! generated `certs.d` tree for two upstreams (origins unreachable: there is no internet here, and the
//! fallback `server` is the real origin), `containerd config dump` accepts the generated fragment, podman pulls
//! through the generated `registries.conf.d` drop-in, and the YAML/TOML/JSON formats parse.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;

use crate::common::{wharf_bin, Server};
use crate::external::containerd::Containerd;
use crate::external::require_tool;
use crate::images::{multi_arch, PLATFORMS};

/// `wharf nodes <args>` with `--config cfg`; panics unless it succeeds; returns stdout.
fn wharf_nodes(cfg: &Path, args: &[&str]) -> String {
    let out = Command::new(wharf_bin()).arg("--config").arg(cfg).arg("nodes").args(args).output().unwrap();
    assert!(out.status.success(), "wharf nodes {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Two upstreams (a plain Wharf each) and the mirror configuration naming them.
struct Mirrors {
    hub: Server,
    k8s: Server,
    mirror: Server,
    cfg: tempfile::TempDir,
}

impl Mirrors {
    fn start() -> Mirrors {
        let (hub, k8s) = (Server::start(), Server::start());
        let text = format!(
            "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ndefault = true\n\n\
             [[upstream]]\nname = \"registry.k8s.io\"\nurl = \"{}\"\n",
            hub.url, k8s.url
        );
        let cfg = tempfile::tempdir().unwrap();
        std::fs::write(cfg.path().join("wharf.toml"), &text).unwrap();
        let mirror = Server::start_config(&text);
        Mirrors { hub, k8s, mirror, cfg }
    }

    fn cfg(&self) -> std::path::PathBuf {
        self.cfg.path().join("wharf.toml")
    }
}

#[tokio::test]
async fn containerd_pulls_through_the_generated_certs_tree() {
    let m = Mirrors::start();
    let demo = multi_arch(601, &PLATFORMS[..2], false, 4_000);
    demo.push(&m.hub.client(), "library/demo", "v1").await;
    let pause = multi_arch(602, &PLATFORMS[..2], true, 4_000);
    pause.push(&m.k8s.client(), "pause", "3.10").await;
    let out = tempfile::tempdir().unwrap();
    let certs = out.path().join("certs.d");
    wharf_nodes(
        &m.cfg(),
        &["config", "--server", &m.mirror.url, "--format", "containerd", "--out", certs.to_str().unwrap()],
    );
    for f in ["docker.io/hosts.toml", "registry.k8s.io/hosts.toml", "containerd-config-v2.toml"] {
        assert!(certs.join(f).exists(), "{f} written");
    }
    let (certs2, all) = (
        certs.clone(),
        [&demo, &pause].map(|i| {
            i.blobs.iter().chain(&i.manifests).chain([&i.index]).map(|c| c.digest.to_string()).collect::<Vec<_>>()
        }),
    );
    tokio::task::spawn_blocking(move || {
        let ctrd = Containerd::start();
        ctrd.fetch(&certs2, "docker.io/library/demo:v1", None, true);
        ctrd.fetch(&certs2, "registry.k8s.io/pause:3.10", None, true);
        let have = ctrd.content_digests();
        for d in all.iter().flatten() {
            assert!(have.contains(d), "{d} missing");
        }
        // The fragment enabling config_path is accepted by containerd itself.
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(
            &main,
            format!("version = 2\nimports = [{:?}]\n", certs2.join("containerd-config-v2.toml").to_str().unwrap()),
        )
        .unwrap();
        let dump = require_tool("containerd", "containerd")
            .arg("--config")
            .arg(&main)
            .args(["config", "dump"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(dump.status.success(), "config dump: {}", String::from_utf8_lossy(&dump.stderr));
        assert!(text.contains("config_path = \"/etc/containerd/certs.d\""), "{text}");
    })
    .await
    .unwrap();
    assert!(m.mirror.metric("wharf_mirror_misses_total", &[]).await > 0, "the pulls went through the mirror");
}

#[tokio::test]
async fn podman_pulls_through_the_generated_drop_in() {
    let Some(clients) = crate::common::shared_path("clients") else {
        println!("skipped: ../shared/clients not found (crane builds the image)");
        return;
    };
    if !Path::new("/usr/bin/podman").exists() {
        println!("skipped: podman is not installed (scripts/test.sh installs it)");
        return;
    }
    let m = Mirrors::start();
    let drop_in = wharf_nodes(&m.cfg(), &["config", "--server", &m.mirror.url, "--format", "podman"]);
    let hub = m.hub.addr.clone();
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let image = format!("{hub}/library/podimg:v1");
        crate::auth::crane_append(&clients.join("crane"), h, &image, b"pulled through the drop-in");
        let conf = h.join("registries.conf");
        std::fs::write(&conf, &drop_in).unwrap();
        let out = Command::new("/usr/bin/podman")
            .args(["--root", h.join("storage").to_str().unwrap(), "--runroot", h.join("run").to_str().unwrap()])
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(["pull", "docker.io/library/podimg:v1"])
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("HOME", h)
            .env("XDG_RUNTIME_DIR", h.join("run"))
            .env("TMPDIR", h)
            .output()
            .unwrap();
        assert!(out.status.success(), "podman pull through the drop-in: {}", String::from_utf8_lossy(&out.stderr));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_format_parses_and_the_server_serves_them_without_credentials() {
    let m = Mirrors::start();
    let server = "https://wharf.example:5000";
    let yaml_ok = Command::new("python3").args(["-c", "import yaml"]).status().is_ok_and(|s| s.success());
    for format in ["containerd", "docker", "podman", "k3s", "buildkit", "kind"] {
        let dir = tempfile::tempdir().unwrap();
        wharf_nodes(
            &m.cfg(),
            &["config", "--server", server, "--format", format, "--out", dir.path().to_str().unwrap()],
        );
        let mut n = 0;
        for entry in walk(dir.path()) {
            n += 1;
            let text = std::fs::read_to_string(&entry).unwrap();
            match entry.extension().and_then(|e| e.to_str()) {
                Some("toml") | Some("conf") => {
                    toml::from_str::<toml::Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
                }
                Some("json") => {
                    serde_json::from_str::<serde_json::Value>(&text).unwrap();
                }
                Some("yaml") if yaml_ok => {
                    let py = "import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
                    let out = Command::new("python3").args(["-c", py]).arg(&entry).output().unwrap();
                    assert!(out.status.success(), "{}: {}", entry.display(), String::from_utf8_lossy(&out.stderr));
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    if format == "k3s" {
                        assert_eq!(v["mirrors"]["docker.io"]["endpoint"][0], server);
                        assert_eq!(v["mirrors"]["registry.k8s.io"]["endpoint"][0], server);
                    } else {
                        assert_eq!(v["kind"], "Cluster");
                        assert_eq!(v["nodes"][0]["extraMounts"][0]["containerPath"], "/etc/containerd/certs.d");
                        assert!(v["containerdConfigPatches"][0].as_str().unwrap().contains("config_path"));
                    }
                }
                _ => {}
            }
        }
        assert!(n > 0, "{format}: no files");
    }
    if !yaml_ok {
        println!("note: python3-yaml missing: YAML formats were not parsed");
    }
    // Served by the running server, with its own URL unless one is given.
    let c = m.mirror.client();
    let r = c.get("/_wharf/nodes/containerd").await;
    assert_eq!(r.status, StatusCode::OK);
    let files = r.json()["files"].as_array().unwrap().clone();
    assert!(files.iter().any(|f| f["path"] == "docker.io/hosts.toml"));
    let r = c.get("/_wharf/nodes/containerd?file=docker.io/hosts.toml").await;
    let hosts: toml::Value = toml::from_str(std::str::from_utf8(&r.body).unwrap()).unwrap();
    assert!(hosts["host"].get(&m.mirror.url).is_some(), "{hosts}");
    let r = c.get(&format!("/_wharf/nodes/docker?server={server}")).await;
    assert_eq!(r.json()["registry-mirrors"][0], server);
    assert_eq!(c.get("/_wharf/nodes/nomad").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/_wharf/nodes/k3s?server=ftp://x").await.status, StatusCode::BAD_REQUEST);
}

#[test]
fn apply_installs_atomically_and_idempotently_with_backups() {
    let cfg = tempfile::tempdir().unwrap();
    let path = cfg.path().join("wharf.toml");
    std::fs::write(&path, "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n").unwrap();
    let token = cfg.path().join("token");
    std::fs::write(&token, "wharf_rt_secret\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let args = [
        "apply",
        "--server",
        "http://10.1.2.3:5000",
        "--format",
        "containerd",
        "--root",
        root.path().to_str().unwrap(),
    ];
    let first = wharf_nodes(&path, &args);
    assert!(first.starts_with("2 file(s) installed, 0 already"), "{first}");
    let hosts = root.path().join("etc/containerd/certs.d/docker.io/hosts.toml");
    assert!(std::fs::read_to_string(&hosts).unwrap().contains("http://10.1.2.3:5000"));
    assert!(wharf_nodes(&path, &args).starts_with("0 file(s) installed, 2 already"), "idempotent");
    // A changed setting replaces the file and keeps a backup of the old one; the token file is private.
    let mut with_token = args.to_vec();
    with_token.extend(["--token-file", token.to_str().unwrap()]);
    assert!(wharf_nodes(&path, &with_token).starts_with("2 file(s) installed"));
    let backups: Vec<_> = std::fs::read_dir(hosts.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("hosts.toml.wharf-backup-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&hosts).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!std::fs::read_dir(hosts.parent().unwrap()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    // Formats apply does not own refuse clearly; a bad server URL is refused before anything is written.
    let out = Command::new(wharf_bin())
        .arg("--config")
        .arg(&path)
        .args(["nodes", "apply", "--server", "http://x:1", "--format", "kind"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nodes config --out"));
    let out = Command::new(wharf_bin())
        .arg("--config")
        .arg(&path)
        .args(["nodes", "config", "--server", "wharf:5000", "--format", "docker"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--server"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn containerd_pulls_over_tls_with_a_robot_token_wired_into_the_generated_files() {
    use crate::tls::{tls_keys, Pki, TlsServer};
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", "0x5001");
    let hub = Server::start();
    let demo = multi_arch(603, &PLATFORMS[..2], false, 4_000);
    demo.push(&hub.client(), "library/demo", "v1").await;
    let upstream = format!("[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\n", hub.url);
    let access = format!(
        "{upstream}\n[auth]\n\n[[access]]\nrepositories = [\"*\"]\nusers = [\"admin\"]\nactions = [\"pull\"]\n"
    );
    let s = TlsServer::start_with(&tls_keys(&cert, &key), &access);
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("wharf.toml"), &upstream).unwrap();
    // A robot token that may pull mirrored Docker Hub content, made beside the running server.
    let out = Command::new(wharf_bin())
        .arg("--data-dir")
        .arg(s.data_dir())
        .args(["token", "create", "--name", "nodes", "--allow", "docker.io/*:pull", "--expires", "1d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    std::fs::write(cfg.path().join("token"), &secret).unwrap();
    let certs = cfg.path().join("certs.d");
    let server = format!("https://{}", s.addr);
    wharf_nodes(
        &cfg.path().join("wharf.toml"),
        &[
            "config",
            "--server",
            &server,
            "--format",
            "containerd",
            "--ca",
            pki.ca().to_str().unwrap(),
            "--token-file",
            cfg.path().join("token").to_str().unwrap(),
            "--certs-dir",
            certs.to_str().unwrap(),
            "--out",
            certs.to_str().unwrap(),
        ],
    );
    let hosts = std::fs::read_to_string(certs.join("docker.io/hosts.toml")).unwrap();
    assert!(hosts.contains("wharf-ca.crt") && hosts.contains("Authorization"), "{hosts}");
    let want: Vec<String> =
        demo.blobs.iter().chain(&demo.manifests).chain([&demo.index]).map(|c| c.digest.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let ctrd = Containerd::start();
        ctrd.fetch(&certs, "docker.io/library/demo:v1", None, true);
        let have = ctrd.content_digests();
        for d in &want {
            assert!(have.contains(d), "{d} missing");
        }
        // Without the generated files' token the same pull is refused.
        let bare = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bare.path().join("docker.io")).unwrap();
        let no_token: String = std::fs::read_to_string(certs.join("docker.io/hosts.toml"))
            .unwrap()
            .lines()
            .filter(|l| !l.contains("Authorization") && !l.contains(".header]"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(bare.path().join("docker.io/hosts.toml"), no_token).unwrap();
        let fresh = Containerd::start();
        let out = fresh.try_fetch(bare.path(), "docker.io/library/demo:v1", None, true);
        assert!(!out.success, "pulled without the token");
    })
    .await
    .unwrap();
}
