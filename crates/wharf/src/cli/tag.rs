//! `wharf tag set|alias|history|rollback`: tag moves on the local store through the same service path as a
//! push (per-tag lock, `[[tags]]` rules, history), so they are safe beside a running server for the tags they
//! touch (every write is an atomic rename; the compare-and-swap itself is exact within one process).

use std::process::ExitCode;

use oci::{Digest, RepoName, Tag};

use crate::app::{Access, Core};
use crate::config::Settings;
use crate::service::tags::TagWrite;
use crate::service::Registry;

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// `repo:tag` → its parts.
pub fn parse_ref(s: &str) -> Result<(RepoName, Tag), String> {
    let (repo, tag) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected REPOSITORY:TAG"))?;
    let repo = repo.parse::<RepoName>().map_err(|e| format!("{s:?}: {e}"))?;
    let tag = tag.parse::<Tag>().map_err(|e| format!("{s:?}: {e}"))?;
    Ok((repo, tag))
}

fn registry(settings: &Settings, access: Access) -> Result<Registry, Box<dyn std::error::Error>> {
    let core = Core::build(settings, access)?;
    Ok(Registry::new(core.store.clone()).with_tag_policy(crate::app::tag_policy(&settings.config)?))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn source() -> String {
    std::env::var("USER").map(|u| format!("cli:{u}")).unwrap_or_else(|_| "cli".into())
}

/// `wharf tag set REPO:TAG DIGEST [--expect OLD]`.
pub fn set(settings: Settings, target: &str, digest: &str, expect: Option<&str>) -> CliResult {
    let (repo, tag) = parse_ref(target)?;
    let digest: Digest = digest.parse()?;
    let if_match = expect.map(str::parse::<Digest>).transpose()?;
    runtime()?.block_on(async {
        let reg = registry(&settings, Access::Write)?;
        let w = TagWrite { if_match, if_none_match: false, source: format!("set:{}", source()) };
        let old = reg.tag_move(&repo, &tag, &digest, &w).await?;
        match old {
            Some(o) if o == digest => println!("{repo}:{tag} already points at {digest}"),
            Some(o) => println!("{repo}:{tag} moved from {o} to {digest}"),
            None => println!("{repo}:{tag} created at {digest}"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `wharf tag alias REPO:ALIAS REPO:TARGET`.
pub fn alias(settings: Settings, alias: &str, target: &str) -> CliResult {
    let (repo, alias_tag) = parse_ref(alias)?;
    let (target_repo, target_tag) = parse_ref(target)?;
    if target_repo != repo {
        return Err(format!("an alias points within its repository ({repo} vs {target_repo})").into());
    }
    runtime()?.block_on(async {
        let reg = registry(&settings, Access::Write)?;
        let d = reg.tag_alias(&repo, &alias_tag, &target_tag, &source()).await?;
        println!("{repo}:{alias_tag} -> {repo}:{target_tag} ({d})");
        Ok(ExitCode::SUCCESS)
    })
}

/// `wharf tag rollback REPO:TAG [--to DIGEST]`.
pub fn rollback(settings: Settings, target: &str, to: Option<&str>) -> CliResult {
    let (repo, tag) = parse_ref(target)?;
    let to = to.map(str::parse::<Digest>).transpose()?;
    runtime()?.block_on(async {
        let reg = registry(&settings, Access::Write)?;
        let d = reg.tag_rollback(&repo, &tag, to.as_ref(), &source()).await?;
        println!("{repo}:{tag} rolled back to {d}");
        Ok(ExitCode::SUCCESS)
    })
}

/// `wharf tag history REPO[:TAG] [--json]`.
pub fn history(settings: Settings, target: &str, json: bool) -> CliResult {
    runtime()?.block_on(async {
        let reg = registry(&settings, Access::ReadOnly)?;
        let tags = match parse_ref(target) {
            Ok((repo, tag)) if !target.ends_with(':') => {
                let mut m = std::collections::BTreeMap::new();
                m.insert(tag.to_string(), reg.tag_history(&repo, &tag).await?);
                (repo, m)
            }
            _ => {
                let repo: RepoName = target.parse()?;
                let all = reg.repo_history(&repo).await?;
                (repo, all)
            }
        };
        let (repo, tags) = tags;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"repository": repo.to_string(), "tags": tags}))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        for (tag, events) in &tags {
            println!("{repo}:{tag}");
            for e in events {
                let when = crate::tls::date(e.time as i64);
                let old = e.old.as_ref().map_or("-".to_owned(), ToString::to_string);
                let what = if e.deleted { "deleted".to_owned() } else { format!("{old} -> {}", e.new) };
                println!("  {when}  {what}  ({})", e.source);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
