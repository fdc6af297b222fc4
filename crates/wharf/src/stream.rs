//! The one byte-stream type that carries blob bodies between layers: client uploads into the store, store
//! reads out to clients, upstream downloads into the store or the mirror's spool, and sync pushes to another
//! registry. It lives outside `store` and `upstream` so both can name it without importing each other.
//!
//! May import: std, bytes, futures. Imports nothing from the crate.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

/// Body bytes in chunks, as they arrive or as they are read; an error ends the stream.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;
