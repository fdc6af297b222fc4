//! The htpasswd file: `user:hash` lines as `htpasswd -B` writes them. Only bcrypt (`$2y$`, `$2b$`, `$2a$`) is
//! accepted: the older schemes (MD5-crypt, SHA-1, plain) are too weak to protect a registry.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The users of an htpasswd file. `Debug` shows only how many there are.
#[derive(Default, Clone)]
pub struct Users {
    hashes: HashMap<String, Arc<str>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} entries)", self.hashes.len())
    }
}

impl Users {
    /// Parse the file's text; blank lines and `#` comments are skipped. The error names the line (never its
    /// content, which holds a hash).
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut hashes = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {n}: expected user:hash"));
            };
            if user.is_empty() {
                return Err(format!("line {n}: empty user name"));
            }
            if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!("line {n} (user {user:?}): not a bcrypt hash (create entries with htpasswd -B)"));
            }
            if hashes.insert(user.to_owned(), Arc::from(hash)).is_some() {
                return Err(format!("line {n}: user {user:?} appears twice"));
            }
        }
        Ok(Users { hashes })
    }

    /// The stored hash of `user`.
    pub fn get(&self, user: &str) -> Option<Arc<str>> {
        self.hashes.get(user).cloned()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// Read and parse `path`; the error names the file.
pub fn load(path: &Path) -> Result<Users, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("htpasswd file {}: cannot read it: {e}", path.display()))?;
    Users::parse(&text).map_err(|e| format!("htpasswd file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bcrypt_only() {
        let u = Users::parse(
            "# users\n\nalice:$2y$05$abcdefghijklmnopqrstuu5Z3QJx0eWv8bGgA6o7n1q7f1hM0o1K\nbob:$2b$04$x\n",
        )
        .unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.get("alice").is_some() && u.get("carol").is_none());
        let e = Users::parse("alice:{SHA}secretish\n").unwrap_err();
        assert!(e.contains("line 1") && !e.contains("secretish"), "{e}");
        assert!(Users::parse("alice\n").unwrap_err().contains("line 1"));
        assert!(Users::parse("a:$2y$1\na:$2y$2\n").unwrap_err().contains("twice"));
        assert!(!format!("{u:?}").contains("$2"));
    }
}
