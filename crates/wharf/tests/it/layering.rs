//! Keeps the layer rule in `src/lib.rs` true: lower layers never import higher ones.

use std::path::Path;

fn imports(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(imports(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("use crate::") {
                    out.push((p.display().to_string(), rest.split([':', ';', '{']).next().unwrap().to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn lower_layers_do_not_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // module → modules it must never import
    let rules: &[(&str, &[&str])] = &[
        ("store", &["api", "service", "app", "cli", "mirror", "upstream", "sync", "transfer"]),
        ("upstream", &["api", "service", "app", "cli", "store", "mirror", "sync", "transfer"]),
        ("mirror", &["api", "service", "app", "cli", "sync"]),
        ("service", &["api", "app", "cli", "sync"]),
        ("sync", &["api", "service", "app", "cli", "mirror"]),
        ("policy", &["api", "service", "app", "cli", "store", "upstream", "mirror", "sync"]),
        ("api", &["app", "cli", "store::fs", "store::memory", "upstream::auth"]),
        ("config", &["api", "service", "store", "app", "cli", "mirror", "sync"]),
    ];
    for (file, forbidden) in
        [("transfer.rs", ["api", "service", "mirror", "sync"]), ("history.rs", ["api", "service", "mirror", "sync"])]
    {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        for f in forbidden {
            assert!(
                !text.contains(&format!("use crate::{f}")),
                "{file} imports crate::{f}, which the layer rule forbids"
            );
        }
    }
    for (module, forbidden) in rules {
        for (file, target) in imports(&src.join(module)) {
            for f in *forbidden {
                let f_root = f.split("::").next().unwrap();
                assert!(
                    target != f_root || f.contains("::"),
                    "{file} imports crate::{target}, which the layer rule forbids"
                );
            }
        }
    }
}
