//! `wharf token create | list | revoke`: robot tokens on the data directory (see `auth::robots`). They work
//! beside a running `wharf serve` (every meta write is an atomic rename; no serve lock is taken), and the
//! server notices a new or revoked token within `auth::robots::ROBOT_CACHE_TTL`.

use std::process::ExitCode;

use crate::auth::robots::{parse_allow, parse_expires, RobotToken, Robots};
use crate::config::Settings;

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn when(unix: Option<u64>) -> String {
    match unix {
        Some(t) => crate::tls::date(i64::try_from(t).unwrap_or(i64::MAX)),
        None => "never".into(),
    }
}

/// Make a token; its secret goes to stdout alone on one line (for `$(wharf token create …)`), a note to stderr.
pub fn create(settings: Settings, name: &str, allow: &[String], expires: &str) -> CliResult {
    let grants = parse_allow(allow)?;
    let expires = parse_expires(expires)?;
    let store = crate::app::open_store(&settings, crate::app::Access::Write)?;
    let (token, secret) = runtime()?.block_on(Robots::new(store).create(name, &grants, expires))?;
    println!("{}", secret.expose());
    eprintln!(
        "created robot token {:?} (id {}, allow {}, expires {}); the secret above is shown only once",
        token.name,
        token.id,
        token.allow.join(" "),
        when(token.expires)
    );
    Ok(ExitCode::SUCCESS)
}

/// List every token with its state; never a secret or a hash.
pub fn list(settings: Settings, json: bool) -> CliResult {
    let store = crate::app::open_store(&settings, crate::app::Access::ReadOnly)?;
    let tokens = runtime()?.block_on(Robots::new(store).list())?;
    let now = crate::history::now_secs();
    if json {
        let rows: Vec<serde_json::Value> = tokens.iter().map(|t| row(t, now)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if tokens.is_empty() {
        println!("no robot tokens");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<20} {:<16} {:<8} {:<23} {:<23} ALLOW", "NAME", "ID", "STATE", "CREATED", "EXPIRES");
    for t in &tokens {
        println!(
            "{:<20} {:<16} {:<8} {:<23} {:<23} {}",
            t.name,
            t.id,
            t.state(now).as_str(),
            when(Some(t.created)),
            when(t.expires),
            t.allow.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn row(t: &RobotToken, now: u64) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "id": t.id,
        "state": t.state(now),
        "allow": t.allow,
        "created": t.created,
        "expires": t.expires,
        "revoked": t.revoked,
    })
}

/// Revoke by id, or the active token with that name.
pub fn revoke(settings: Settings, name_or_id: &str) -> CliResult {
    let store = crate::app::open_store(&settings, crate::app::Access::Write)?;
    let token = runtime()?.block_on(Robots::new(store).revoke(name_or_id))?;
    println!("revoked robot token {:?} (id {})", token.name, token.id);
    Ok(ExitCode::SUCCESS)
}
