//! Blob bytes that reach the socket without a copy through user space.
//!
//! A download of a committed blob is the file's bytes, unchanged, and committed blob files never change (they
//! are written elsewhere, fsynced, renamed into place, and from then on only unlinked). So the store does not
//! read them into heap buffers: it hands out [`Bytes`] that borrow a read-only memory mapping of a window of
//! the file ([`map_immutable_window`]). Every live window is listed in a process-wide table (address range →
//! file and offset). The server's connections ([`Conn`]) look up each buffer they are asked to write: one
//! that lies inside a window goes out with `sendfile(2)` from the file itself, so the kernel moves page-cache
//! pages to the socket and the mapping is never read; anything else (headers, manifests, small blobs) goes out
//! with an ordinary write. A window that reaches any other writer is still correct: the mapping holds the same
//! bytes, and the kernel's socket write copies them once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
#[cfg(target_os = "linux")]
use memmap2::Advice;
use memmap2::{Mmap, MmapOptions};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A live window: where its bytes come from.
struct Region {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

/// Live windows by start address. Looked up once per socket write while any window exists.
static REGIONS: Mutex<BTreeMap<usize, Region>> = Mutex::new(BTreeMap::new());
/// Number of live windows: with none (no large download running) writes skip the table's lock.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Bytes sent with `sendfile(2)` since start.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Blob bytes this process has sent with `sendfile(2)` (the `/metrics` counter): shows that downloads take
/// the copy-free path.
pub fn sendfile_bytes() -> u64 {
    SENT.load(Ordering::Relaxed)
}

fn regions() -> MutexGuard<'static, BTreeMap<usize, Region>> {
    // The table holds plain data; a panic elsewhere while it was locked cannot leave it half-updated.
    REGIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The owner behind a window's [`Bytes`]: the mapping, listed in the table for exactly as long as it exists.
struct Window {
    map: Mmap,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // Runs before the mapping is unmapped, so no lookup can find an address that is no longer mapped.
        regions().remove(&(self.map.as_ptr() as usize));
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Map `len` bytes of `file` from `offset`, wait until they are in the page cache, and return them as
/// [`Bytes`] that a [`Conn`] sends with `sendfile(2)`.
///
/// Blocking (it waits for the disk when the bytes are not cached): call it from a blocking thread, so that
/// `sendfile` on the async workers only ever finds cached pages. Only for files that are never written or
/// truncated while mapped: committed blobs. A file shorter than `offset + len` is an error, not a signal.
pub fn map_immutable_window(file: &Arc<File>, offset: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let map = map_readonly(file, offset, len)?;
    populate(&map)?;
    let start = map.as_ptr() as usize;
    regions().insert(start, Region { len, file: file.clone(), offset });
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(Bytes::from_owner(Window { map }))
}

/// The one `mmap` call.
#[allow(unsafe_code)]
fn map_readonly(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: a read-only shared mapping is sound as long as nobody writes or truncates the file while it is
    // mapped (Rust would otherwise see memory change under a `&[u8]`, or fault on pages past the end).
    // `map_immutable_window` is only called on committed blob files, which Wharf never opens for writing after
    // their rename into `blobs/`: a re-push renames a new file over the path (the mapped inode stays as it
    // was) and a delete unlinks it (the inode lives until the mapping is gone). Pages are checked to exist
    // (`populate`, which reports a short file as an error) before the mapping is handed out; sending it uses
    // `sendfile`, which does not touch the mapping at all.
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}

/// Make sure the window's pages are in the page cache, blocking until they are. Usually they already are
/// (a blob just pushed or recently read): then nothing is touched, so the mapping gets no page-table entries
/// and adds nothing to the process's RSS. Otherwise they are read in (MADV_POPULATE_READ).
fn populate(map: &Mmap) -> io::Result<()> {
    if all_cached(map) {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    let populated = map.advise(Advice::PopulateRead);
    #[cfg(not(target_os = "linux"))]
    let populated = Err(io::Error::from_raw_os_error(libc::EINVAL));
    match populated {
        Ok(()) => Ok(()),
        // Kernels before 5.14 (and other systems) do not know MADV_POPULATE_READ: read one byte per page.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut x = 0u8;
            for i in (0..map.len()).step_by(4096) {
                x ^= map[i];
            }
            std::hint::black_box(x);
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file is shorter than its recorded size"))
        }
        Err(e) => Err(e),
    }
}

/// Whether every page of the window is in the page cache (`mincore(2)`, which for a file mapping reports the
/// file's cached pages without touching them). `false` when it cannot tell: the caller then reads them in.
#[allow(unsafe_code)]
fn all_cached(map: &Mmap) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    if page == 0 || !page.is_power_of_two() {
        return false;
    }
    // The mapping itself starts at the page boundary at or below the first byte (the file offset was rounded
    // down to a page when it was mapped), so the rounded range lies inside it.
    let start = map.as_ptr() as usize & !(page - 1);
    let len = map.as_ptr() as usize + map.len() - start;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: [start, start + len) is inside a live mapping owned by `map` and `start` is page-aligned;
    // `vec` has one byte per page of that range, as mincore writes.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, vec.as_mut_ptr().cast()) };
    rc == 0 && vec.iter().all(|v| v & 1 == 1)
}

/// Where a buffer's bytes come from, if it lies inside a live window.
fn file_of(table: &BTreeMap<usize, Region>, buf: &[u8]) -> Option<(Arc<File>, u64)> {
    let addr = buf.as_ptr() as usize;
    let (&start, r) = table.range(..=addr).next_back()?;
    (addr + buf.len() <= start + r.len).then(|| (r.file.clone(), r.offset + (addr - start) as u64))
}

/// What the next write of `bufs` is: skip the empty buffers before index `.0`; then either `sendfile` buffer
/// `.0` from the file (`.1`), or write buffers `.0..end` (`.2`) normally.
type Plan = (usize, Option<(Arc<File>, u64)>, usize);

fn plan(bufs: &[IoSlice<'_>]) -> Option<Plan> {
    let first = bufs.iter().position(|b| !b.is_empty())?;
    // Elsewhere than Linux windows are written like any buffer (one copy by the kernel).
    if !cfg!(target_os = "linux") || LIVE.load(Ordering::Relaxed) == 0 {
        return Some((first, None, bufs.len()));
    }
    let table = regions();
    if let Some(src) = file_of(&table, &bufs[first]) {
        return Some((first, Some(src), first + 1));
    }
    let end = bufs[first + 1..]
        .iter()
        .position(|b| !b.is_empty() && file_of(&table, b).is_some())
        .map_or(bufs.len(), |i| first + 1 + i);
    Some((first, None, end))
}

/// A server connection: a TCP stream whose writes of mapped blob windows become `sendfile(2)`.
#[derive(Debug)]
pub struct Conn {
    tcp: TcpStream,
}

impl Conn {
    /// Wrap an accepted connection.
    pub fn new(tcp: TcpStream) -> Conn {
        Conn { tcp }
    }

    fn poll_sendfile(&self, cx: &mut Context<'_>, file: &File, offset: u64, len: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_io(Interest::WRITABLE, || sendfile(&self.tcp, file, offset, len)) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than its mapped window",
                    )))
                }
                Ok(n) => {
                    SENT.fetch_add(n as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// One `sendfile(2)` call: up to `len` bytes of `file` from `offset` onto the (non-blocking) socket.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn sendfile(sock: &TcpStream, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are borrowed, so they stay open for the call; `off` is a live local that the
    // kernel only reads and updates. Linux sends at most 0x7ffff000 bytes per call anyway.
    let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, len.min(0x7fff_f000)) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Never called: [`plan`] only chooses `sendfile` on Linux.
#[cfg(not(target_os = "linux"))]
fn sendfile(_: &TcpStream, _: &File, _: u64, _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match plan(bufs) {
            None => Poll::Ready(Ok(0)),
            Some((i, Some((file, offset)), _)) => self.poll_sendfile(cx, &file, offset, bufs[i].len()),
            Some((i, None, end)) => Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[i..end]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The server's listener: plain TCP whose connections send mapped blob windows with `sendfile(2)`
/// ([`crate::zero_copy`]), so a large download costs no copy through user space.
pub struct Listener(pub tokio::net::TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop: retries, and backs off on errors such as running out of descriptors.
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (Conn::new(tcp), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn blob(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        (f, data)
    }

    #[test]
    fn a_window_holds_the_file_bytes_and_is_found_only_while_it_lives() {
        let (f, data) = blob(3 * 4096 + 123);
        let file = Arc::new(File::open(f.path()).unwrap());
        // an unaligned offset, as a Range request gives
        let w = map_immutable_window(&file, 5000, 4000).unwrap();
        assert_eq!(&w[..], &data[5000..9000]);
        let inner = w.slice(100..200);
        let (_, off) = file_of(&regions(), &inner).expect("a slice of a live window is found");
        assert_eq!(off, 5100);
        let heap = data[5000..9000].to_vec();
        assert!(file_of(&regions(), &heap).is_none(), "a heap copy is not a window");
        let addr = w.as_ptr() as usize;
        drop((w, inner));
        assert!(!regions().contains_key(&addr), "a dropped window leaves the table");
    }

    #[test]
    fn a_window_past_the_end_of_the_file_is_an_error() {
        let (f, _) = blob(10_000);
        let file = Arc::new(File::open(f.path()).unwrap());
        let err = map_immutable_window(&file, 0, 3 * 1024 * 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn plan_sends_windows_by_sendfile_and_the_rest_by_write() {
        let (f, _) = blob(64 * 1024);
        let file = Arc::new(File::open(f.path()).unwrap());
        let w = map_immutable_window(&file, 4096, 8192).unwrap();
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let bufs = [IoSlice::new(&[]), IoSlice::new(&head), IoSlice::new(&w[10..])];
        let (i, src, end) = plan(&bufs).unwrap();
        assert_eq!((i, src.is_none(), end), (1, true, 2), "the header is written, up to the window");
        let (i, src, _) = plan(&bufs[2..]).unwrap();
        assert_eq!((i, src.map(|s| s.1)), (0, Some(4106)));
        assert!(plan(&[IoSlice::new(&[])]).is_none());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_sends_windows_by_sendfile_and_other_bytes_by_write() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (f, data) = blob(5 * 4096 + 17);
        let file = Arc::new(File::open(f.path()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::spawn({
            let addr = listener.local_addr().unwrap();
            async move {
                let mut got = Vec::new();
                TcpStream::connect(addr).await.unwrap().read_to_end(&mut got).await.unwrap();
                got
            }
        });
        let mut conn = Conn::new(listener.accept().await.unwrap().0);
        let window = map_immutable_window(&file, 1000, data.len() - 1000).unwrap();
        let before = sendfile_bytes();
        conn.write_all(b"head:").await.unwrap();
        conn.write_all(&window).await.unwrap();
        conn.shutdown().await.unwrap();
        drop(conn);
        let got = client.await.unwrap();
        assert_eq!(&got[..5], b"head:");
        assert!(got[5..] == data[1000..], "the window's bytes arrive unchanged");
        // other tests may send concurrently: at least this window went by sendfile
        assert!(sendfile_bytes() - before >= window.len() as u64);
    }
}
