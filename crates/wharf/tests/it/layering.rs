//! Keeps the layer rule in `src/lib.rs` true: lower layers never import higher ones.
//!
//! The checker reads every `crate::` path in a module's source (comments and string literals removed): `use
//! crate::a::b;`, grouped `use crate::{a, b::{c, d}};` over any number of lines, and paths written inline
//! without `use` (`crate::a::f()`). A second test feeds it a tree with forbidden imports in each form, so the
//! check is known to be able to fail.

use std::path::{Path, PathBuf};

/// Module (a folder `src/<m>/` or a file `src/<m>.rs`) → crate paths it must never reach. A forbidden entry
/// `a::b` forbids `crate::a::b` and everything below it, not the rest of `crate::a`.
const RULES: &[(&str, &[&str])] = &[
    ("store", &["api", "service", "app", "cli", "mirror", "upstream", "sync", "transfer"]),
    ("upstream", &["api", "service", "app", "cli", "store", "mirror", "sync", "transfer"]),
    ("mirror", &["api", "service", "app", "cli", "sync"]),
    ("service", &["api", "app", "cli", "sync"]),
    ("sync", &["api", "service", "app", "cli", "mirror"]),
    ("policy", &["api", "service", "app", "cli", "store", "upstream", "mirror", "sync"]),
    ("api", &["app", "cli", "store::fs", "store::memory", "upstream::auth"]),
    ("config", &["api", "service", "store", "app", "cli", "mirror", "sync"]),
    ("transfer", &["api", "service", "mirror", "sync"]),
    ("history", &["api", "service", "mirror", "sync"]),
    ("access_log", &["api", "service", "app", "cli", "mirror", "upstream", "sync", "transfer", "gc", "policy"]),
    ("gc", &["api", "service", "app", "cli", "mirror", "upstream", "sync", "transfer"]),
    ("scrub", &["api", "service", "app", "cli", "mirror", "upstream", "sync", "transfer"]),
    ("tls", &["api", "service", "app", "cli", "store", "upstream", "mirror", "sync"]),
    // auth reads robot tokens through the `ContentStore` trait's meta documents, never a back-end directly.
    ("auth", &["api", "service", "app", "cli", "store::fs", "upstream", "mirror", "sync"]),
    ("images", &["api", "service", "app", "cli", "store", "upstream", "mirror", "sync", "auth", "tls"]),
    ("verify", &["api", "service", "app", "cli", "mirror", "sync"]),
    ("events", &["api", "service", "app", "cli", "mirror", "upstream", "sync", "transfer", "gc", "auth"]),
    ("bundle", &["api", "service", "app", "cli", "mirror", "sync"]),
    ("nodes", &["api", "service", "app", "cli", "store", "upstream", "mirror", "sync", "auth", "tls"]),
];

/// One forbidden reference: the file, the `crate::` path it uses, and the rule entry it breaks.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    path: String,
    forbidden: String,
}

/// Every violation of `rules` in the source tree rooted at `src`, sorted. File names are relative to `src`.
fn check(src: &Path, rules: &[(&str, &[&str])]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (module, forbidden) in rules {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rs_files(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for path in crate_paths(&text) {
                for fb in *forbidden {
                    if path == *fb || path.starts_with(&format!("{fb}::")) {
                        out.push(Violation {
                            file: f.strip_prefix(src).unwrap().display().to_string(),
                            path: path.clone(),
                            forbidden: (*fb).to_owned(),
                        });
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments (line, block, doc) and string/char literals blanked out, so a `crate::` in prose
/// or in a message is not taken for a path.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) && !ident_before(b, i) {
            // raw string r"..." / r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // 'x' char literal (lifetimes have no closing quote two bytes on)
            i += 3;
            out.push_str("' '");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Every module path reached through `crate::` (without the `crate::` prefix), with groups expanded:
/// `crate::{a, b::{c, d}}` gives `a`, `b::c`, `b::d`. Whitespace and line breaks between the parts are allowed.
fn crate_paths(text: &str) -> Vec<String> {
    let code = code_only(text);
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate") {
        let at = from + pos;
        from = at + "crate".len();
        // `$crate::` belongs to macros; `my_crate::` and `crates` are other identifiers.
        if (at > 0 && (ident_before(b, at) || b[at - 1] == b'$'))
            || b.get(from).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            continue;
        }
        let rest = skip_ws(&code[from..]);
        if let Some(rest) = rest.strip_prefix("::") {
            expand(rest, String::new(), &mut out);
        }
    }
    out
}

fn skip_ws(s: &str) -> &str {
    s.trim_start()
}

/// Parse one path (or group) at the start of `s`, prefixed by `prefix`, pushing every full path.
/// Returns the rest of `s` after it.
fn expand<'s>(s: &'s str, prefix: String, out: &mut Vec<String>) -> &'s str {
    let s = skip_ws(s);
    if let Some(mut rest) = s.strip_prefix('{') {
        loop {
            rest = skip_ws(expand(rest, prefix.clone(), out));
            if let Some(r) = rest.strip_prefix(',') {
                rest = skip_ws(r);
            }
            if let Some(r) = rest.strip_prefix('}') {
                return r;
            }
            if rest.is_empty()
                || !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '{' || c == '*')
            {
                return rest;
            }
        }
    }
    let len = s.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
    if len == 0 {
        // `*` or the end of a path
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return s.strip_prefix('*').unwrap_or(s);
    }
    let ident = &s[..len];
    let path = if prefix.is_empty() { ident.to_owned() } else { format!("{prefix}::{ident}") };
    let after = skip_ws(&s[len..]);
    if let Some(rest) = after.strip_prefix("::") {
        expand(rest, path, out)
    } else {
        out.push(path);
        // `as alias`
        match after.strip_prefix("as ") {
            Some(r) => {
                let r = skip_ws(r);
                &r[r.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count()..]
            }
            None => after,
        }
    }
}

#[test]
fn lower_layers_do_not_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // The checker reads the real tree (a wrong path would find nothing and pass).
    let api = std::fs::read_to_string(src.join("api/mod.rs")).unwrap();
    assert!(crate_paths(&api).contains(&"service::Registry".to_owned()));
    for (module, _) in RULES {
        assert!(src.join(module).is_dir() || src.join(format!("{module}.rs")).is_file(), "no module {module}");
    }
    let found = check(&src, RULES);
    let lines: Vec<String> =
        found.iter().map(|v| format!("  {} uses crate::{} (forbidden: {})", v.file, v.path, v.forbidden)).collect();
    assert!(found.is_empty(), "the layer rule is broken:\n{}", lines.join("\n"));
}

#[test]
fn checker_reports_every_form_of_forbidden_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    // forbidden, one per form
    write("store/plain.rs", "use crate::api::errors::ApiError;\n");
    write("store/grouped.rs", "use crate::{api, store::keys};\n");
    write("store/nested.rs", "use crate::{\n    store::keys,\n    service::{Registry, blobs::Blobs},\n};\n");
    write("store/inline.rs", "fn f() -> u8 {\n    crate :: mirror::fill(1)\n}\n");
    write("store/deep/sub.rs", "pub(crate) fn g() { let _ = crate::upstream::Client::new(); }\n");
    write("api/fs.rs", "use crate::store::fs::FsStore;\nuse crate::store::Store;\n");
    write("transfer.rs", "use crate::sync::Syncer;\n");
    write(
        "policy/alias.rs",
        "use crate::store as s;\nuse crate::{cli::*, oci_x};\nfn f() -> crate\n    ::mirror::X { x() }\n",
    );
    // allowed: own module, comments, doc links, strings, macros, other identifiers ending in `crate`
    write(
        "store/ok.rs",
        "//! See [`crate::api::errors`].\n/* crate::service::x */\nuse crate::store::keys;\n\
         use oci::Digest;\nconst S: &str = \"crate::api::x\";\nconst R: &str = r#\"crate::cli::x\"#;\n\
         macro_rules! m { () => { $crate::api::x } }\nfn h<'a>(c: &'a str) -> char { let _ = my_crate::api::x; 'x' }\n",
    );
    write("api/ok.rs", "use crate::store::{Store, keys::Key};\nuse crate::service::Registry;\n");

    let got: Vec<(String, String)> = check(src, RULES).into_iter().map(|v| (v.file, v.path)).collect();
    let want: Vec<(String, String)> = [
        ("api/fs.rs", "store::fs::FsStore"),
        ("policy/alias.rs", "cli"),
        ("policy/alias.rs", "mirror::X"),
        ("policy/alias.rs", "store"),
        ("store/deep/sub.rs", "upstream::Client::new"),
        ("store/grouped.rs", "api"),
        ("store/inline.rs", "mirror::fill"),
        ("store/nested.rs", "service::Registry"),
        ("store/nested.rs", "service::blobs::Blobs"),
        ("store/plain.rs", "api::errors::ApiError"),
        ("transfer.rs", "sync::Syncer"),
    ]
    .iter()
    .map(|(f, p)| ((*f).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn path_parser_expands_groups() {
    assert_eq!(
        crate_paths("use crate::{a::{b, c::d}, e};\nx(crate::f::g);"),
        ["a::b", "a::c::d", "e", "f::g"].map(String::from)
    );
    assert_eq!(
        crate_paths("use crate::a as b;\nuse crate::{c::*, d as e, f::{self, g}};\n"),
        ["a", "c", "d", "f::self", "f::g"].map(String::from)
    );
}
