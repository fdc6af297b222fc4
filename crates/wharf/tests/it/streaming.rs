//! Bodies stream end to end: a large blob goes in and out with the server's memory staying small.

use bytes::Bytes;
use futures_util::StreamExt;
use oci::Digester;
use reqwest::Method;

use crate::common::Server;

const SIZE: u64 = 768 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

fn chunk(i: u64) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

#[tokio::test]
async fn large_blob_streams_with_bounded_memory() {
    let s = Server::start();
    let n = SIZE / CHUNK as u64;
    let mut h = Digester::new(oci::Algorithm::Sha256);
    for i in 0..n {
        h.update(&chunk(i));
    }
    let digest = h.finish();
    let body =
        reqwest::Body::wrap_stream(futures_util::stream::iter((0..n).map(|i| Ok::<_, std::io::Error>(chunk(i)))));
    let r = crate::common::http()
        .build()
        .unwrap()
        .post(format!("{}/v2/big/blobs/uploads/?digest={digest}", s.url))
        .header("content-length", SIZE)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let r = s.client().http.request(Method::GET, format!("{}/v2/big/blobs/{digest}", s.url)).send().await.unwrap();
    assert_eq!(r.content_length(), Some(SIZE));
    let mut stream = r.bytes_stream();
    let mut h = Digester::new(oci::Algorithm::Sha256);
    while let Some(c) = stream.next().await {
        h.update(&c.unwrap());
    }
    assert_eq!(h.len(), SIZE);
    assert_eq!(h.finish(), digest);
    let peak = s.peak_rss_kib();
    assert!(peak < 48 * 1024, "server peak RSS {peak} KiB for a {SIZE}-byte blob");
}

/// Deterministic bytes that differ at every offset (a shifted window would not match).
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

#[tokio::test]
async fn large_ranged_reads_are_exact_and_go_out_by_sendfile() {
    let s = Server::start();
    let c = s.client();
    // several of the store's 2 MiB windows, and not a multiple of the page size
    let data = pattern(9 * 1024 * 1024 + 4321);
    let d = c.push_blob("big/ranged", &data).await;
    let path = format!("/v2/big/ranged/blobs/{d}");
    let before = s.metric("wharf_blob_sendfile_bytes_total", &[]).await;
    let n = data.len();
    let cases: [(String, usize, usize); 5] = [
        // an unaligned start, crossing two window boundaries
        ("bytes=1000003-5000000".into(), 1_000_003, 5_000_000),
        // from one byte before a window boundary to the end
        (format!("bytes={}-", 2 * 1024 * 1024 - 1), 2 * 1024 * 1024 - 1, n - 1),
        // the last 3 MB, as a suffix range
        ("bytes=-3000000".into(), n - 3_000_000, n - 1),
        // one byte in the middle of the last window
        ("bytes=8500000-8500000".into(), 8_500_000, 8_500_000),
        // the whole blob as a range
        (format!("bytes=0-{}", n - 1), 0, n - 1),
    ];
    let mut ranged = 0u64;
    for (range, first, last) in &cases {
        let r = c.req(Method::GET, &path, &[("range", range)], None).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("content-range"), Some(format!("bytes {first}-{last}/{n}")), "{range}");
        assert_eq!(r.body.len(), last - first + 1, "{range}");
        assert!(r.body[..] == data[*first..=*last], "{range}: body differs from the blob's bytes");
        ranged += r.body.len() as u64;
    }
    let r = c.get(&path).await;
    assert_eq!(r.status, 200);
    assert!(r.body[..] == data[..], "full GET differs from the blob's bytes");
    // Every byte of those bodies larger than a small blob went out by sendfile, none through a heap copy
    // (the one-byte range is a small read).
    let sent = s.metric("wharf_blob_sendfile_bytes_total", &[]).await - before;
    if cfg!(target_os = "linux") {
        assert_eq!(sent, ranged - 1 + n as u64);
    }
}
