//! Finding image references in the files builds and deployments are made of: Dockerfiles (`FROM` with `ARG`
//! defaults and `--build-arg` overrides, stage names excluded, `COPY --from=<image>`, `RUN --mount=from=`) and
//! YAML (Kubernetes objects of every kind, `helm template` streams, kind cluster configs, Compose files: every
//! `image:` value outside block scalars and comments).
//!
//! Each reference keeps the byte span of its text in the file when the text is written there literally (no
//! variable), so a rewrite can change exactly those bytes and nothing else.

use std::collections::HashMap;
use std::sync::OnceLock;

use oci::reference::Reference;

/// One image reference found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The reference as written (after `ARG` substitution for Dockerfiles).
    pub written: String,
    /// Parsed and normalised (`docker.io/library/alpine:3.20`); `:latest` when neither tag nor digest is given.
    pub reference: Reference,
    /// 1-based line where it was found.
    pub line: usize,
    /// Byte range of `written` in the file, when it appears there literally.
    pub span: Option<(usize, usize)>,
}

/// A value that looked like an image reference but could not be used (unresolved variable, bad syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The text as written.
    pub written: String,
    /// 1-based line.
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Dockerfile / Containerfile.
    Dockerfile,
    /// YAML (Kubernetes, kind, Compose, Helm output).
    Yaml,
}

/// Tell a file's kind by its name (`Dockerfile`, `Containerfile`, `*.Dockerfile`, `*.yaml`, `*.yml`), else by
/// its first instruction.
pub fn kind_of(name: &str, text: &str) -> Kind {
    let base = name.rsplit('/').next().unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    if lower.starts_with("dockerfile") || lower.starts_with("containerfile") || lower.ends_with(".dockerfile") {
        return Kind::Dockerfile;
    }
    if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        return Kind::Yaml;
    }
    let first = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    let word = first.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    if matches!(word.as_str(), "FROM" | "ARG") {
        Kind::Dockerfile
    } else {
        Kind::Yaml
    }
}

/// Normalise `text` into a reference (`:latest` added when there is neither tag nor digest).
pub fn normalise(text: &str) -> Result<Reference, String> {
    let mut r: Reference = text.parse().map_err(|e: oci::reference::ReferenceError| e.to_string())?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".parse().expect("valid tag"));
    }
    Ok(r)
}

/// Scan `text` of the given kind.
pub fn scan(kind: Kind, text: &str, build_args: &HashMap<String, String>) -> (Vec<Found>, Vec<Skipped>) {
    match kind {
        Kind::Dockerfile => scan_dockerfile(text, build_args),
        Kind::Yaml => scan_yaml(text),
    }
}

/// One logical Dockerfile instruction: its text with continuations joined, and the line it starts on.
struct Instruction {
    line: usize,
    /// Byte offset of the instruction's first line in the file.
    start: usize,
    /// Byte offset just past its last line.
    end: usize,
    text: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    // `# escape=`` (a parser directive at the top) changes the continuation character.
    let mut escape = '\\';
    for l in text.lines() {
        let t = l.trim();
        let Some(d) = t.strip_prefix('#') else { break };
        let d = d.trim().to_ascii_lowercase();
        if let Some(v) = d.strip_prefix("escape=") {
            escape = v.trim().chars().next().unwrap_or('\\');
        } else if !d.starts_with("syntax=") && !d.starts_with("check=") {
            break;
        }
    }
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_start = offset;
        offset += raw.len();
        let l = raw.trim_end_matches(['\n', '\r']);
        let t = l.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_none()) {
            continue;
        }
        let (body, continues) = match t.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (t, false),
        };
        let ins =
            current.get_or_insert_with(|| Instruction { line: i + 1, start: line_start, end: 0, text: String::new() });
        if !ins.text.is_empty() {
            ins.text.push(' ');
        }
        ins.text.push_str(body);
        ins.end = offset;
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`; `None` when a variable has no value.
fn substitute(s: &str, vars: &HashMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let (name, modifier) = if chars.peek() == Some(&'{') {
            chars.next();
            let inner: String = chars.by_ref().take_while(|c| *c != '}').collect();
            match inner.split_once(':') {
                Some((n, m)) => (n.to_owned(), Some(m.to_owned())),
                None => (inner, None),
            }
        } else {
            let mut n = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    n.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            (n, None)
        };
        let value = vars.get(&name).filter(|v| !v.is_empty());
        match (modifier.as_deref(), value) {
            (Some(m), None) if m.starts_with('-') => out.push_str(&m[1..]),
            (Some(m), Some(_)) if m.starts_with('+') => out.push_str(&m[1..]),
            (Some(m), None) if m.starts_with('+') => {}
            (_, Some(v)) => out.push_str(v),
            (_, None) => return None,
        }
    }
    Some(out)
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// `ARG A=1 B="2" C`: name → default (absent defaults are not recorded).
fn parse_args(rest: &str, vars: &mut HashMap<String, String>, overrides: &HashMap<String, String>) {
    for word in rest.split_whitespace() {
        let (name, default) = match word.split_once('=') {
            Some((n, v)) => (n, Some(unquote(v).to_owned())),
            None => (word, None),
        };
        let value = overrides.get(name).cloned().or(default);
        match value {
            Some(v) => {
                let v = substitute(&v, vars).unwrap_or(v);
                vars.insert(name.to_owned(), v);
            }
            None => {
                vars.remove(name);
            }
        }
    }
}

fn scan_dockerfile(text: &str, build_args: &HashMap<String, String>) -> (Vec<Found>, Vec<Skipped>) {
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    let mut global: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut seen_from = false;
    for ins in instructions(text) {
        let (word, rest) = ins.text.split_once(char::is_whitespace).unwrap_or((&ins.text, ""));
        let word = word.to_ascii_uppercase();
        let mut candidates: Vec<&str> = Vec::new();
        match word.as_str() {
            "ARG" if !seen_from => parse_args(rest, &mut global, build_args),
            "FROM" => {
                seen_from = true;
                let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
                if let Some(image) = words.first() {
                    candidates.push(image);
                }
                if words.len() >= 3 && words[1].eq_ignore_ascii_case("as") {
                    stages.push(words[2].to_ascii_lowercase());
                }
            }
            "COPY" | "ADD" => {
                candidates.extend(rest.split_whitespace().filter_map(|w| w.strip_prefix("--from=")));
            }
            "RUN" => {
                for w in rest.split_whitespace().filter_map(|w| w.strip_prefix("--mount=")) {
                    candidates.extend(w.split(',').filter_map(|kv| kv.strip_prefix("from=")));
                }
            }
            _ => {}
        }
        for raw in candidates {
            let written_raw = unquote(raw);
            let Some(value) = substitute(written_raw, &global) else {
                skipped.push(Skipped {
                    written: written_raw.into(),
                    line: ins.line,
                    reason: "unresolved variable".into(),
                });
                continue;
            };
            let lower = value.to_ascii_lowercase();
            if lower == "scratch" || stages.contains(&lower) || value.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let span = (!written_raw.contains('$'))
                .then(|| {
                    text[ins.start..ins.end]
                        .find(written_raw)
                        .map(|i| (ins.start + i, ins.start + i + written_raw.len()))
                })
                .flatten();
            match normalise(&value) {
                Ok(reference) => found.push(Found { written: value, reference, line: ins.line, span }),
                Err(e) => skipped.push(Skipped { written: value, line: ins.line, reason: e }),
            }
        }
    }
    (found, skipped)
}

fn image_key() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r#"(?:^|[\s{,])(?:image|"image"|'image')\s*:\s+("[^"]*"|'[^']*'|(?:\$\{[^}]*\}|[^\s,}\#])+)"#)
            .expect("valid regex")
    })
}

/// The part of a YAML line before a comment (`#` at the start or after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double, mut prev_space) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn scan_yaml(text: &str) -> (Vec<Found>, Vec<Skipped>) {
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    // Inside a block scalar (`key: |` / `key: >-`), every more-indented line is text, not YAML.
    let mut block_indent: Option<usize> = None;
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let indent = line.len() - line.trim_start().len();
        if let Some(b) = block_indent {
            if line.trim().is_empty() || indent > b {
                continue;
            }
            block_indent = None;
        }
        let code = strip_comment(line);
        let trimmed = code.trim_end();
        if trimmed.ends_with(['|', '>']) || regex_block_end(trimmed) {
            block_indent = Some(indent);
        }
        for cap in image_key().captures_iter(code) {
            let m = cap.get(1).expect("group");
            let quoted = m.as_str().starts_with(['"', '\'']);
            let (value, start) =
                if quoted { (&m.as_str()[1..m.as_str().len() - 1], m.start() + 1) } else { (m.as_str(), m.start()) };
            if value.is_empty() {
                continue;
            }
            if value.contains("${") || value.contains("{{") {
                skipped.push(Skipped { written: value.into(), line: i + 1, reason: "template or variable".into() });
                continue;
            }
            match normalise(value) {
                Ok(reference) => found.push(Found {
                    written: value.into(),
                    reference,
                    line: i + 1,
                    span: Some((line_start + start, line_start + start + value.len())),
                }),
                Err(e) => skipped.push(Skipped { written: value.into(), line: i + 1, reason: e }),
            }
        }
    }
    (found, skipped)
}

/// `key: |-`, `key: >+2` and the like.
fn regex_block_end(s: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r":\s+[|>][-+0-9]*$").expect("valid regex")).is_match(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(found: &[Found]) -> Vec<(String, usize)> {
        found.iter().map(|f| (f.reference.to_string(), f.line)).collect()
    }

    #[test]
    fn dockerfile_args_stages_and_mounts() {
        let text = "# syntax=docker/dockerfile:1\nARG GO=1.22\nARG BASE=debian:bookworm-slim\nARG REG\n\
                    FROM --platform=$BUILDPLATFORM golang:${GO}-alpine AS build\nARG GO=9\nRUN --mount=type=cache,target=/root \\\n    \
                    --mount=type=bind,from=ghcr.io/org/tools:v1,source=/x,target=/y make\n\
                    FROM build AS test\nFROM ${REG:-quay.io}/org/app:1 AS other\nFROM $BASE\n\
                    COPY --from=build /out /bin\nCOPY --from=docker.io/bitnami/kubectl:1.30 /k /bin\nCOPY --from=0 /a /b\n\
                    FROM scratch\nFROM $MISSING/x\n";
        let (found, skipped) = scan_dockerfile(text, &HashMap::new());
        assert_eq!(
            refs(&found),
            [
                ("docker.io/library/golang:1.22-alpine".to_owned(), 5),
                ("ghcr.io/org/tools:v1".to_owned(), 7),
                ("quay.io/org/app:1".to_owned(), 10),
                ("docker.io/library/debian:bookworm-slim".to_owned(), 11),
                ("docker.io/bitnami/kubectl:1.30".to_owned(), 13),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].line, 16);
        // Literal references carry their span, substituted ones do not.
        let tools = &found[1];
        assert_eq!(&text[tools.span.unwrap().0..tools.span.unwrap().1], "ghcr.io/org/tools:v1");
        assert!(found[0].span.is_none());
        // --build-arg overrides the ARG default.
        let args = HashMap::from([("GO".to_owned(), "1.23".to_owned())]);
        assert_eq!(scan_dockerfile(text, &args).0[0].reference.to_string(), "docker.io/library/golang:1.23-alpine");
    }

    #[test]
    fn yaml_every_image_key_outside_block_scalars() {
        let text = "# a helm stream\n---\napiVersion: batch/v1\nkind: CronJob\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers:\n            - name: init\n              image: \"busybox:1.36\"  # pinned later\n          containers:\n            - {name: app, image: ghcr.io/org/app@sha256:0000000000000000000000000000000000000000000000000000000000000000}\n            - image: nginx\n---\napiVersion: v1\nkind: ConfigMap\ndata:\n  script: |\n    image: not-an-image:1\n    more text\n  other: x\n---\nkind: Cluster\nnodes:\n- role: control-plane\n  image: kindest/node:v1.31.0\n# image: commented:1\nservices:\n  web:\n    image: '${REGISTRY}/web:1'\n";
        let (found, skipped) = scan_yaml(text);
        assert_eq!(
            refs(&found),
            [
                ("docker.io/library/busybox:1.36".to_owned(), 12),
                (
                    "ghcr.io/org/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
                        .to_owned(),
                    14
                ),
                ("docker.io/library/nginx:latest".to_owned(), 15),
                ("docker.io/kindest/node:v1.31.0".to_owned(), 28),
            ]
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        for f in &found {
            let (a, b) = f.span.unwrap();
            assert_eq!(&text[a..b], f.written);
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of("build/Dockerfile.dev", ""), Kind::Dockerfile);
        assert_eq!(kind_of("x/app.Dockerfile", ""), Kind::Dockerfile);
        assert_eq!(kind_of("k8s/deploy.yml", ""), Kind::Yaml);
        assert_eq!(kind_of("-", "# c\nFROM alpine\n"), Kind::Dockerfile);
        assert_eq!(kind_of("-", "apiVersion: v1\n"), Kind::Yaml);
    }
}
