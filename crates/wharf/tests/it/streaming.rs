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
    let r = reqwest::Client::new()
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
