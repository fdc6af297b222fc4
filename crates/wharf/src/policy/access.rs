//! Access rules (`[[access]]`): which caller may do what to which repository. Pure data and decisions; the
//! HTTP layer (`api::access`) maps requests to [`Action`]s and asks [`Rules::allows`].
//!
//! Decision: **first match wins**. Entries are read in file order; the first one whose `repositories` match
//! the repository *and* whose `users` match the caller decides, and its `actions` are all the caller may do
//! there (later entries are not consulted). No matching entry: denied. The `admin` action (for `/_wharf/*` and
//! `/metrics`) is not about a repository: it is granted by any entry whose `users` match and whose `actions`
//! include it.

use super::tags::TagPattern;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs, put manifests.
    Push,
    /// Delete manifests, blobs, tags.
    Delete,
    /// Read Wharf's own status pages and metrics.
    Admin,
}

impl Action {
    /// Parse a config word; the error names the accepted ones.
    pub fn parse(s: &str) -> Result<Action, String> {
        match s {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            "admin" => Ok(Action::Admin),
            _ => Err(format!("unknown action {s:?} (expected pull, push, delete or admin)")),
        }
    }

    /// The word used in configuration (and, later, in token scopes).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }
}

/// Who is asking, as the rules see it: a verified user name with its groups, or nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The verified user name; `None` for an anonymous request.
    pub user: Option<String>,
    /// Groups the user belongs to (from `[auth.groups]`).
    pub groups: Vec<String>,
    /// Set when the credential itself carries its permissions (a registry token's granted scopes, a robot
    /// token's `--allow` list): then these grants alone decide and the `[[access]]` entries are not consulted
    /// (a registry token's scopes were already cut down to the rules when it was issued).
    pub grants: Option<Vec<Grant>>,
    /// Set for a caller holding a registry token: the identity the token was issued to. The token's scopes
    /// (in `grants`) decide repository requests; the subject decides what a scope cannot express (the
    /// catalog, names selected by `ns`).
    pub token: Option<Box<TokenSubject>>,
}

/// Who a registry token was issued to, and whether it may list the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject {
    /// The subject as the rules see it (its own grants for a robot).
    pub caller: Caller,
    /// Whether the token grants `registry:catalog:*`.
    pub catalog: bool,
}

impl Caller {
    /// An unauthenticated caller.
    pub fn anonymous() -> Caller {
        Caller::default()
    }

    /// A user with groups and no credential-bound grants.
    pub fn user(name: impl Into<String>, groups: Vec<String>) -> Caller {
        Caller { user: Some(name.into()), groups, grants: None, token: None }
    }
}

/// Permission carried by a credential: repositories (globs, `re:`, or exact names) and the actions allowed
/// there. Written `team/*:pull,push` (robot tokens' `--allow`); a registry token's `access` claim entries
/// become one grant each.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The repository pattern as written (kept for listing and for token claims).
    pub repositories: String,
    pattern: TagPattern,
    /// Actions allowed on matching repositories.
    pub actions: Vec<Action>,
}

impl Grant {
    /// A grant for `repositories` (a glob such as `team/*`, `re:<regex>`, or an exact name).
    pub fn new(repositories: &str, actions: Vec<Action>) -> Result<Grant, String> {
        let pattern = TagPattern::parse(repositories.trim())?;
        Ok(Grant { repositories: repositories.trim().to_owned(), pattern, actions })
    }

    /// Parse `REPOS:ACTION[,ACTION...]` (the last `:` separates, so `re:` patterns work).
    pub fn parse(s: &str) -> Result<Grant, String> {
        let (repos, actions) =
            s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected REPOSITORIES:ACTIONS, e.g. team/*:pull,push"))?;
        if repos.trim().is_empty() {
            return Err(format!("{s:?}: empty repository pattern"));
        }
        let actions = actions.split(',').map(|a| Action::parse(a.trim())).collect::<Result<Vec<_>, _>>()?;
        Grant::new(repos, actions)
    }

    /// Whether this grant covers `action` on `repo` ([`Action::Admin`] ignores `repo`).
    pub fn allows(&self, repo: &str, action: Action) -> bool {
        self.actions.contains(&action) && (action == Action::Admin || self.pattern.matches(repo))
    }
}

/// Two grants are the same when written the same (the compiled pattern follows from the text).
impl PartialEq for Grant {
    fn eq(&self, other: &Grant) -> bool {
        self.repositories == other.repositories && self.actions == other.actions
    }
}

impl Eq for Grant {}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(|a| a.as_str()).collect();
        write!(f, "{}:{}", self.repositories, actions.join(","))
    }
}

/// One `users` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    /// `anonymous`: requests without credentials (a logged-in user is not anonymous).
    Anonymous,
    /// `group:<name>`.
    Group(String),
    /// A user name; `*` means every authenticated user.
    User(String),
}

impl Subject {
    fn parse(s: &str) -> Result<Subject, String> {
        match s {
            "" => Err("empty user name".into()),
            "anonymous" => Ok(Subject::Anonymous),
            _ => match s.strip_prefix("group:") {
                Some("") => Err("empty group name in \"group:\"".into()),
                Some(g) => Ok(Subject::Group(g.to_owned())),
                None => Ok(Subject::User(s.to_owned())),
            },
        }
    }

    fn matches(&self, c: &Caller) -> bool {
        match (self, &c.user) {
            (Subject::Anonymous, None) => true,
            (Subject::User(u), Some(name)) => u == "*" || u == name,
            (Subject::Group(g), Some(_)) => c.groups.iter().any(|x| x == g),
            _ => false,
        }
    }
}

/// One compiled `[[access]]` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    repositories: Vec<TagPattern>,
    users: Vec<Subject>,
    actions: Vec<Action>,
}

impl Rule {
    /// Compile an entry; every problem is returned with the key it concerns (`repositories[1]`, `actions[0]`).
    pub fn compile(
        repositories: &[String],
        users: &[String],
        actions: &[String],
    ) -> Result<Rule, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if repositories.is_empty() {
            problems.push(("repositories".into(), "must list at least one glob (\"*\" for every repository)".into()));
        }
        if users.is_empty() {
            problems.push(("users".into(), "must list at least one user, \"group:<name>\" or \"anonymous\"".into()));
        }
        if actions.is_empty() {
            problems.push(("actions".into(), "must list at least one of pull, push, delete, admin".into()));
        }
        let mut rule = Rule { repositories: Vec::new(), users: Vec::new(), actions: Vec::new() };
        for (i, r) in repositories.iter().enumerate() {
            match TagPattern::parse(r.trim()) {
                Ok(p) => rule.repositories.push(p),
                Err(e) => problems.push((format!("repositories[{i}]"), e)),
            }
        }
        for (i, u) in users.iter().enumerate() {
            match Subject::parse(u.trim()) {
                Ok(s) => rule.users.push(s),
                Err(e) => problems.push((format!("users[{i}]"), e)),
            }
        }
        for (i, a) in actions.iter().enumerate() {
            match Action::parse(a.trim()) {
                Ok(a) => rule.actions.push(a),
                Err(e) => problems.push((format!("actions[{i}]"), e)),
            }
        }
        if problems.is_empty() {
            Ok(rule)
        } else {
            Err(problems)
        }
    }

    fn applies(&self, caller: &Caller, repo: &str) -> bool {
        self.users.iter().any(|s| s.matches(caller)) && self.repositories.iter().any(|p| p.matches(repo))
    }
}

/// The ordered `[[access]]` entries.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// The entries in file order.
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules { rules }
    }

    /// Whether any entry names `anonymous` (then anonymous callers may list the catalog, filtered).
    pub fn mentions_anonymous(&self) -> bool {
        self.rules.iter().any(|r| r.users.contains(&Subject::Anonymous))
    }

    /// Every action `caller` may take on `repo` (the first matching entry's actions, or none; a caller with
    /// credential-bound grants gets what those grants allow).
    pub fn allowed(&self, caller: &Caller, repo: &str) -> Vec<Action> {
        if let Some(grants) = &caller.grants {
            return [Action::Pull, Action::Push, Action::Delete]
                .into_iter()
                .filter(|a| grants.iter().any(|g| g.allows(repo, *a)))
                .collect();
        }
        self.rules
            .iter()
            .find(|r| r.applies(caller, repo))
            .map(|r| r.actions.iter().copied().filter(|a| *a != Action::Admin).collect())
            .unwrap_or_default()
    }

    /// Whether `caller` may take `action` on `repo` ([`Action::Admin`] ignores `repo`).
    pub fn allows(&self, caller: &Caller, repo: &str, action: Action) -> bool {
        if let Some(grants) = &caller.grants {
            return grants.iter().any(|g| g.allows(repo, action));
        }
        if action == Action::Admin {
            return self.rules.iter().any(|r| r.users.iter().any(|s| s.matches(caller)) && r.actions.contains(&action));
        }
        self.allowed(caller, repo).contains(&action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &[&str], users: &[&str], actions: &[&str]) -> Rule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Rule::compile(&s(repos), &s(users), &s(actions)).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> Caller {
        Caller::user(name, groups.iter().map(|g| g.to_string()).collect())
    }

    #[test]
    fn grants_decide_alone() {
        let rules = Rules::new(vec![rule(&["*"], &["*"], &["pull", "push", "delete", "admin"])]);
        let mut robot = user("ci", &[]);
        robot.grants = Some(vec![Grant::parse("team/*:pull,push").unwrap()]);
        assert!(rules.allows(&robot, "team/app", Action::Push));
        assert!(!rules.allows(&robot, "team/app", Action::Delete), "the broad rule does not widen a grant");
        assert!(!rules.allows(&robot, "other/app", Action::Pull));
        assert!(!rules.allows(&robot, "", Action::Admin));
        assert_eq!(rules.allowed(&robot, "team/x"), vec![Action::Pull, Action::Push]);
        let g = Grant::parse("re:^a/(b|c)$:pull").unwrap();
        assert!(g.allows("a/b", Action::Pull) && !g.allows("a/d", Action::Pull));
        assert_eq!(g.to_string(), "re:^a/(b|c)$:pull");
        assert!(Grant::parse("team/*").is_err() && Grant::parse(":pull").is_err());
        assert!(Grant::parse("team/*:pull,write").unwrap_err().contains("write"));
    }

    #[test]
    fn first_match_wins_and_default_is_deny() {
        let rules = Rules::new(vec![
            rule(&["team/secret"], &["alice"], &["pull"]),
            rule(&["team/*"], &["alice", "group:ci"], &["pull", "push", "delete"]),
            rule(&["*"], &["anonymous"], &["pull"]),
        ]);
        let alice = user("alice", &[]);
        assert!(rules.allows(&alice, "team/app", Action::Push));
        assert!(rules.allows(&alice, "team/a/b", Action::Delete), "a glob's * crosses /");
        assert!(!rules.allows(&alice, "team/secret", Action::Push), "the earlier, narrower entry decides");
        assert!(rules.allows(&alice, "team/secret", Action::Pull));
        assert!(!rules.allows(&alice, "other/x", Action::Pull), "a user is not anonymous");
        assert!(rules.allows(&user("bob", &["ci"]), "team/app", Action::Push));
        assert!(!rules.allows(&user("bob", &[]), "team/app", Action::Pull));
        assert!(rules.allows(&Caller::anonymous(), "other/x", Action::Pull));
        assert!(!rules.allows(&Caller::anonymous(), "other/x", Action::Push));
        assert!(!rules.allows(&alice, "", Action::Admin));
        assert!(Rules::default().allowed(&alice, "x").is_empty());
    }

    #[test]
    fn admin_and_every_user() {
        let rules = Rules::new(vec![rule(&["*"], &["*"], &["pull", "admin"])]);
        assert!(rules.allows(&user("x", &[]), "", Action::Admin));
        assert!(!rules.allows(&Caller::anonymous(), "", Action::Admin));
        assert_eq!(rules.allowed(&user("x", &[]), "a"), vec![Action::Pull]);
    }

    #[test]
    fn compile_names_every_problem() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let e = Rule::compile(&s(&["re:("]), &s(&["group:"]), &s(&["pull", "write"])).unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["repositories[0]", "users[0]", "actions[1]"]);
        let e = Rule::compile(&[], &[], &[]).unwrap_err();
        assert_eq!(e.len(), 3);
    }
}
