//! The command line contract: flags, env vars, config errors, help, graceful shutdown.

use std::process::Command;

use crate::common::{wharf_bin, Server};

fn wharf(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(wharf_bin());
    c.args(args).env_remove("WHARF_CONFIG").env_remove("WHARF_LISTEN").env_remove("WHARF_DATA_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn help_names_the_contract() {
    let out = wharf(&["serve", "--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--listen", "--data-dir", "--config", "WHARF_LISTEN", "WHARF_DATA_DIR", "WHARF_CONFIG"] {
        assert!(text.contains(word), "serve --help lacks {word}:\n{text}");
    }
}

#[test]
fn gc_help_names_the_contract() {
    let out = wharf(&["gc", "--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--grace", "--dry-run", "--data-dir", "--config", "status"] {
        assert!(text.contains(word), "gc --help lacks {word}:\n{text}");
    }
    let out = wharf(&["gc", "--grace", "soon", "--data-dir", "/nonexistent/wharf"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grace"), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let out = wharf(&["gc", "status", "--data-dir", dir.path().join("none").to_str().unwrap()], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no garbage collection has run yet"));
    assert!(!dir.path().join("none").exists(), "status creates nothing");
}

#[test]
fn config_errors_name_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wharf.toml");
    std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:0\"\nbogus = true\n").unwrap();
    let out = wharf(&["config", "check", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wharf.toml") && err.contains("bogus") && err.contains("unknown field"), "{err}");
    // serve refuses to start on the same file
    let out = wharf(&["serve", "--config", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = wharf(&["config", "check"], &[("WHARF_CONFIG", f.to_str().unwrap())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = wharf(&["serve", "--listen", "not-an-address"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn config_check_refuses_credentials_in_an_upstream_url_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("creds.toml");
    std::fs::write(
        &f,
        "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n\n\
         [[upstream]]\nname = \"quay.io\"\nurl = \"https://robot:hunter2@quay.io\"\n",
    )
    .unwrap();
    for args in [
        &["config", "check", f.to_str().unwrap()][..],
        &["serve", "--listen", "127.0.0.1:0", "--config", f.to_str().unwrap()],
    ] {
        let out = wharf(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?} must refuse the file");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for want in ["creds.toml", "upstream[1].url", "must not contain credentials", "username"] {
            assert!(stderr.contains(want), "{args:?}: stderr lacks {want:?}: {stderr}");
        }
        assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"), "{args:?} showed the password: {stderr}");
    }
}

#[tokio::test]
async fn env_and_file_settings_apply_with_flags_winning() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("w.toml");
    let file_data = dir.path().join("from-file");
    std::fs::write(
        &f,
        format!("[server]\nlisten = \"127.0.0.1:1\"\n[storage]\ndata_dir = \"{}\"\n", file_data.display()),
    )
    .unwrap();
    // flag --listen (in start_with) wins over the file's port 1; the file's data_dir applies.
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config", f.to_str().unwrap()])
        .env("WHARF_LISTEN", "127.0.0.1:2")
        .env_remove("WHARF_DATA_DIR")
        .stdout(std::process::Stdio::piped());
    crate::common::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(
        line.starts_with("wharf listening on 127.0.0.1:") && !line.contains(":1\n") && !line.contains(":2\n"),
        "{line}"
    );
    assert!(file_data.join("blobs").is_dir(), "data dir from the config file is used");
    child.kill().unwrap();
    child.wait().unwrap();
    // env wins over the file
    let env_data = dir.path().join("from-env");
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["serve", "--config", f.to_str().unwrap()])
        .env("WHARF_LISTEN", "127.0.0.1:0")
        .env("WHARF_DATA_DIR", &env_data)
        .stdout(std::process::Stdio::piped());
    crate::common::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("wharf listening on 127.0.0.1:"), "{line}");
    assert!(env_data.join("blobs").is_dir());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let s = Server::start();
    assert_eq!(s.client().get("/v2/").await.status, 200);
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
}
