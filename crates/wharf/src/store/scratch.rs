//! Per-process scratch folders (`tmp/`, `spool/`) and the data-directory lock of `wharf serve`.
//!
//! Several processes may use one data directory at once (`wharf serve` and `wharf sync`), so no process may
//! empty a scratch folder wholesale: each one writes under its own `<parent>/<pid>-<random>/` and holds an
//! advisory lock (`flock`) on the sibling file `<pid>-<random>.lock` for as long as it lives. A sweeper removes
//! another process's folder only when that lock is free (its owner is gone; the kernel drops `flock` locks when
//! a process dies, also after `kill -9`) *and* the folder is older than a bound, which covers the moment
//! between a folder's creation and its lock, and filesystems without working `flock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::StoreError;

/// Another process's unlocked scratch is removed only when it has not changed for this long.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

/// What an attempt to take a lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// We hold it now.
    Taken,
    /// Another open file holds it: a live process.
    Held,
    /// The filesystem has no `flock` (some network filesystems): only age protects scratch there.
    Unsupported,
}

/// Take an exclusive `flock` without waiting.
fn try_lock(f: &File) -> io::Result<Lock> {
    use rustix::io::Errno;
    match rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Lock::Taken),
        Err(e) if e == Errno::WOULDBLOCK => Ok(Lock::Held),
        Err(e) if e == Errno::NOLCK || e == Errno::OPNOTSUPP || e == Errno::INVAL => Ok(Lock::Unsupported),
        Err(e) => Err(e.into()),
    }
}

/// This process's own scratch folder; removed (best effort) when dropped, and by a later sweep otherwise.
#[derive(Debug)]
pub struct ProcessDir {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl ProcessDir {
    /// Create `<parent>/<pid>-<random>/` and lock it for the life of this value.
    pub fn create(parent: &Path) -> Result<ProcessDir, StoreError> {
        super::fs::create_dir_durable(parent).map_err(io_err(parent))?;
        let mut r = [0u8; 4];
        getrandom::getrandom(&mut r).expect("the OS random source is available");
        let name = format!("{}-{}", std::process::id(), hex::encode(r));
        let lock_path = parent.join(format!("{name}.lock"));
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        if try_lock(&lock).map_err(io_err(&lock_path))? == Lock::Held {
            return Err(io_err(&lock_path)(io::Error::other("a fresh scratch lock is held by someone else")));
        }
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        Ok(ProcessDir { dir, lock_path, _lock: lock })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ProcessDir {
    fn drop(&mut self) {
        // Best effort on the way out: whatever stays is unlocked from now on and swept once it is stale.
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

fn older_than(meta: &fs::Metadata, bound: Duration, now: SystemTime) -> io::Result<bool> {
    Ok(now.duration_since(meta.modified()?).is_ok_and(|age| age > bound))
}

fn remove_any(path: &Path, is_dir: bool) -> Result<bool, StoreError> {
    let r = if is_dir { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Remove what gone processes left in `parent`: folders whose lock is free and which are older than `bound`,
/// their lock files, and (from older versions without locks) loose entries older than `bound`. Folders of live
/// processes, this one included, are never touched. Every entry is tried; the first failure is returned.
pub fn sweep(parent: &Path, bound: Duration, now: SystemTime) -> Result<usize, StoreError> {
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(parent)(e)),
    };
    let mut removed = 0;
    let mut first_error = None;
    for entry in entries {
        let result = (|| -> Result<bool, StoreError> {
            let entry = entry.map_err(io_err(parent))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err(&path)(e)),
            };
            let (lock_path, dir) = match name.strip_suffix(".lock") {
                Some(stem) => (path.clone(), parent.join(stem)),
                None => (parent.join(format!("{name}.lock")), path.clone()),
            };
            if name.ends_with(".lock") && dir.exists() {
                return Ok(false); // handled together with its folder
            }
            // Hold the owner's lock (if there is one) while removing, so nobody can take it over meanwhile.
            let _held = match File::open(&lock_path) {
                Ok(f) => {
                    if try_lock(&f).map_err(io_err(&lock_path))? == Lock::Held {
                        return Ok(false); // a live process
                    }
                    Some(f)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&lock_path)(e)),
            };
            if !older_than(&meta, bound, now).map_err(io_err(&path))? {
                return Ok(false);
            }
            let gone = remove_any(&path, meta.is_dir())?;
            if path != lock_path {
                remove_any(&lock_path, false)?;
            }
            Ok(gone)
        })();
        match result {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// The data-directory lock of `wharf serve`: one server per data directory, since two would expire and sweep
/// each other's upload sessions. Held until dropped (or the process ends).
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
    /// False on a filesystem without `flock`: a second server cannot be detected there.
    pub enforced: bool,
}

impl ServeLock {
    /// Take the lock at `path`, or say which process holds it.
    pub fn acquire(path: &Path) -> Result<ServeLock, String> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let state = try_lock(&f).map_err(|e| format!("{}: {e}", path.display()))?;
        if state == Lock::Held {
            let holder = fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            let dir = path.parent().unwrap_or(path);
            return Err(format!(
                "the data directory {} is in use by another `wharf serve`{who}; stop it first or pass another \
                 --data-dir (`wharf sync` and `wharf sync status` may run beside a server)",
                dir.display()
            ));
        }
        f.set_len(0)
            .and_then(|()| write!(f, "{}", std::process::id()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ServeLock { _file: f, enforced: state == Lock::Taken })
    }
}

/// An exclusive `flock` on a file for the life of the value, taken without waiting: `gc.lock`, so two garbage
/// collections (a scheduled one in `serve`, a `wharf gc`) never run on one data directory at once.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock at `path` (writing our pid into it); `Ok(None)` when another process holds it. On a
    /// filesystem without `flock` the lock is taken (nothing can be detected there).
    pub fn try_acquire(path: &Path) -> Result<Option<DirLock>, String> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if try_lock(&f).map_err(|e| format!("{}: {e}", path.display()))? == Lock::Held {
            return Ok(None);
        }
        f.set_len(0)
            .and_then(|()| write!(f, "{}", std::process::id()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(DirLock { _file: f }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_spares_live_and_fresh_folders() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("tmp");
        let mine = ProcessDir::create(&parent).unwrap();
        fs::write(mine.path().join("data"), b"in flight").unwrap();
        // A gone process: folder and lock file, lock free.
        let dead = parent.join("1-deadbeef");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("data"), b"x").unwrap();
        File::create(parent.join("1-deadbeef.lock")).unwrap();
        // A loose leftover of an older version.
        fs::write(parent.join("old.part"), b"x").unwrap();
        let now = SystemTime::now();
        assert_eq!(sweep(&parent, STALE_AFTER, now).unwrap(), 0, "everything is fresh");
        let later = now + STALE_AFTER + Duration::from_secs(60);
        assert_eq!(sweep(&parent, STALE_AFTER, later).unwrap(), 2);
        assert!(!dead.exists() && !parent.join("1-deadbeef.lock").exists() && !parent.join("old.part").exists());
        assert!(mine.path().join("data").exists(), "a live process's folder is never swept");
        let path = mine.path().to_owned();
        drop(mine);
        assert!(!path.exists());
    }

    #[test]
    fn a_second_server_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("serve.lock");
        let held = ServeLock::acquire(&p).unwrap();
        let e = ServeLock::acquire(&p).unwrap_err();
        assert!(e.contains(&root.path().display().to_string()) && e.contains(&std::process::id().to_string()), "{e}");
        drop(held);
        ServeLock::acquire(&p).unwrap();
    }
}
