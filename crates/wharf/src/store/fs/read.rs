//! Blob downloads from the filesystem store without copying the bytes through user space.
//!
//! A reader thread (one per download, as for uploads) walks the requested range in windows: each window is a
//! read-only mapping of the committed blob file ([`crate::zero_copy`]) whose pages the thread first brings into
//! the page cache, so a slow disk blocks this thread and never an async worker. The windows go to the HTTP
//! body as [`Bytes`] that borrow the mapping, and the server's connection sends them with `sendfile(2)`: no
//! heap buffer, no copy into one. Memory per download is a few mapped windows: page cache, shared with every
//! other reader of the blob, that the process never touches when the pages were already cached (so it adds
//! nothing to RSS), and no buffer on the heap.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::store::ByteStream;
use crate::zero_copy;

/// Bytes per window: large enough that mapping and unmapping cost little per byte, small enough that a
/// download holds only a few MiB of mapped page cache.
const WINDOW: usize = 2 * 1024 * 1024;
/// Windows prepared ahead of the socket: enough to keep it busy while the next one is mapped.
const DEPTH: usize = 2;

/// Stream `len` bytes of the committed blob file at `path` from `start`.
pub(super) fn stream(path: PathBuf, start: u64, len: u64) -> ByteStream {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        let run = || -> io::Result<()> {
            let file = Arc::new(File::open(&path)?);
            let (mut at, end) = (start, start + len);
            while at < end {
                let n = (end - at).min(WINDOW as u64) as usize;
                let window = zero_copy::map_immutable_window(&file, at, n)?;
                at += n as u64;
                if tx.blocking_send(Ok(window)).is_err() {
                    return Ok(()); // the client went away
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
