//! The one conformance suite every [`ContentStore`] back-end must pass. Each back-end's module calls
//! [`run_all`] with a factory for fresh, empty stores.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Descriptor, Digest, MediaType, RepoName, Tag};

use super::{ByteRange, ByteStream, ContentStore, StoreError, StoredManifest};

fn body(chunks: &[&'static [u8]]) -> ByteStream {
    let v: Vec<Result<Bytes, std::io::Error>> = chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
    Box::pin(futures_util::stream::iter(v))
}

async fn read_all(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

/// Run every check against fresh stores from `make`.
pub async fn run_all(mut make: impl FnMut() -> Arc<dyn ContentStore>) {
    blobs(make()).await;
    large_blob_round_trip(make()).await;
    uploads(make()).await;
    manifests_tags_referrers(make()).await;
    listings(make()).await;
    meta(make()).await;
}

async fn meta(s: Arc<dyn ContentStore>) {
    assert_eq!(s.meta_get("sync/a.json").await.unwrap(), None);
    s.meta_put("sync/a.json", Bytes::from_static(b"1")).await.unwrap();
    s.meta_put("sync/b.json", Bytes::from_static(b"2")).await.unwrap();
    s.meta_put("sync/deeper/c.json", Bytes::from_static(b"3")).await.unwrap();
    s.meta_put("sync/a.json", Bytes::from_static(b"one")).await.unwrap();
    assert_eq!(s.meta_get("sync/a.json").await.unwrap().unwrap(), Bytes::from_static(b"one"));
    assert_eq!(s.meta_list("sync").await.unwrap(), ["sync/a.json", "sync/b.json"]);
    assert!(s.meta_list("nothing").await.unwrap().is_empty());
    for bad in ["", "../x", "a//b", "a/./b", "a b", ".hidden"] {
        assert!(s.meta_put(bad, Bytes::new()).await.is_err(), "{bad:?}");
    }
}

async fn blobs(s: Arc<dyn ContentStore>) {
    let d = Digest::sha256_of(b"hello world");
    assert!(s.blob_stat(&d).await.unwrap().is_none());
    assert!(s.blob_open(&d, None).await.unwrap().is_none());
    let meta = s.blob_put(&d, Some(11), body(&[b"hello ", b"world"])).await.unwrap();
    assert_eq!(meta.size, 11);
    assert_eq!(s.blob_stat(&d).await.unwrap().unwrap().size, 11);
    // idempotent
    s.blob_put(&d, None, body(&[b"hello world"])).await.unwrap();
    let r = s.blob_open(&d, None).await.unwrap().unwrap();
    assert_eq!(read_all(r.body).await, b"hello world");
    let r = s.blob_open(&d, Some(ByteRange { start: 6, end: 10 })).await.unwrap().unwrap();
    assert_eq!(r.meta.size, 11);
    assert_eq!(read_all(r.body).await, b"world");
    // wrong digest and wrong size are rejected and leave nothing visible
    let other = Digest::sha256_of(b"other");
    assert!(matches!(s.blob_put(&other, None, body(&[b"not other"])).await, Err(StoreError::DigestMismatch { .. })));
    assert!(s.blob_stat(&other).await.unwrap().is_none());
    assert!(matches!(s.blob_put(&other, Some(3), body(&[b"other"])).await, Err(StoreError::SizeMismatch { .. })));
    assert!(s.blob_stat(&other).await.unwrap().is_none());
    // a failing body is an error, not a blob
    let broken: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"oth")),
        Err(std::io::Error::other("client went away")),
    ]));
    assert!(matches!(s.blob_put(&other, None, broken).await, Err(StoreError::Body(_))));
    assert!(s.blob_stat(&other).await.unwrap().is_none());
    // links are per repository
    let (a, b) = (repo("a"), repo("b/c"));
    s.blob_link(&a, &d).await.unwrap();
    assert!(s.blob_linked(&a, &d).await.unwrap());
    assert!(!s.blob_linked(&b, &d).await.unwrap());
    assert!(s.blob_unlink(&a, &d).await.unwrap());
    assert!(!s.blob_linked(&a, &d).await.unwrap());
    assert!(s.blob_delete(&d).await.unwrap());
    assert!(s.blob_stat(&d).await.unwrap().is_none());
    // importing a local file: verified, then visible; a wrong file is refused
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spool");
    std::fs::write(&f, b"imported").unwrap();
    let want = Digest::sha256_of(b"imported");
    assert_eq!(s.blob_import(&want, &f).await.unwrap().size, 8);
    assert_eq!(read_all(s.blob_open(&want, None).await.unwrap().unwrap().body).await, b"imported");
    std::fs::write(&f, b"tampered").unwrap();
    let other_want = Digest::sha256_of(b"original");
    assert!(matches!(s.blob_import(&other_want, &f).await, Err(StoreError::DigestMismatch { .. })));
    assert!(s.blob_stat(&other_want).await.unwrap().is_none());
    // sha512 works end to end
    let d512 = Digest::of(oci::Algorithm::Sha512, b"x");
    s.blob_put(&d512, Some(1), body(&[b"x"])).await.unwrap();
    assert_eq!(s.blob_stat(&d512).await.unwrap().unwrap().size, 1);
}

async fn large_blob_round_trip(s: Arc<dyn ContentStore>) {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&data);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(70_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    s.blob_put(&d, Some(data.len() as u64), Box::pin(futures_util::stream::iter(chunks))).await.unwrap();
    let r = s.blob_open(&d, None).await.unwrap().unwrap();
    assert_eq!(read_all(r.body).await, data);
    let r = s.blob_open(&d, Some(ByteRange { start: 1_000_000, end: 2_500_000 })).await.unwrap().unwrap();
    assert_eq!(read_all(r.body).await, &data[1_000_000..=2_500_000]);
}

async fn uploads(s: Arc<dyn ContentStore>) {
    let r = repo("team/app");
    let id = s.upload_start(&r).await.unwrap();
    let st = s.upload_state(&id).await.unwrap();
    assert_eq!((st.repo.as_str(), st.size), ("team/app", 0));
    assert_eq!(s.upload_append(&id, 0, body(&[b"abc"])).await.unwrap(), 3);
    assert!(matches!(
        s.upload_append(&id, 0, body(&[b"abc"])).await,
        Err(StoreError::UploadOffset { given: 0, current: 3 })
    ));
    assert_eq!(s.upload_append(&id, 3, body(&[b"def"])).await.unwrap(), 6);
    assert_eq!(s.upload_state(&id).await.unwrap().size, 6);
    let meta = s.upload_finish(&id, &Digest::sha256_of(b"abcdef")).await.unwrap();
    assert_eq!(meta.size, 6);
    assert!(s.blob_stat(&meta.digest).await.unwrap().is_some());
    assert!(matches!(s.upload_state(&id).await, Err(StoreError::UploadUnknown(_))));
    // wrong digest at the end: rejected, nothing committed
    let id = s.upload_start(&r).await.unwrap();
    s.upload_append(&id, 0, body(&[b"zzz"])).await.unwrap();
    let claimed = Digest::sha256_of(b"yyy");
    assert!(matches!(s.upload_finish(&id, &claimed).await, Err(StoreError::DigestMismatch { .. })));
    assert!(s.blob_stat(&claimed).await.unwrap().is_none());
    // abort
    let id = s.upload_start(&r).await.unwrap();
    s.upload_abort(&id).await.unwrap();
    assert!(matches!(s.upload_state(&id).await, Err(StoreError::UploadUnknown(_))));
    // empty upload is a valid (empty) blob
    let id = s.upload_start(&r).await.unwrap();
    assert_eq!(s.upload_finish(&id, &Digest::sha256_of(b"")).await.unwrap().size, 0);
}

async fn manifests_tags_referrers(s: Arc<dyn ContentStore>) {
    let r = repo("x/y");
    assert!(s.tag_list(&r, None, 10).await.unwrap().is_none());
    let bytes = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[]}"#);
    let d = Digest::sha256_of(&bytes);
    let m = StoredManifest { bytes: bytes.clone(), media_type: MediaType::OciIndex };
    assert!(s.manifest_get(&r, &d).await.unwrap().is_none());
    s.manifest_put(&r, &d, &m, None).await.unwrap();
    let got = s.manifest_get(&r, &d).await.unwrap().unwrap();
    assert_eq!((got.bytes, got.media_type), (bytes, MediaType::OciIndex));
    assert!(s.manifest_get(&repo("other"), &d).await.unwrap().is_none());
    assert_eq!(s.tag_list(&r, None, 10).await.unwrap().unwrap(), Vec::<Tag>::new());

    s.tag_put(&r, &tag("v1"), &d).await.unwrap();
    s.tag_put(&r, &tag("latest"), &d).await.unwrap();
    assert_eq!(s.tag_get(&r, &tag("v1")).await.unwrap(), Some(d.clone()));
    let d2 = Digest::sha256_of(b"2");
    s.tag_put(&r, &tag("v1"), &d2).await.unwrap();
    assert_eq!(s.tag_get(&r, &tag("v1")).await.unwrap(), Some(d2.clone()));
    assert!(s.tag_delete(&r, &tag("v1")).await.unwrap());
    assert!(!s.tag_delete(&r, &tag("v1")).await.unwrap());
    assert_eq!(s.tag_get(&r, &tag("v1")).await.unwrap(), None);

    // referrers
    let art = Bytes::from_static(b"{}");
    let ad = Digest::sha256_of(&art);
    let mut desc = Descriptor::new(MediaType::OciManifest, ad.clone(), 2);
    desc.artifact_type = Some(MediaType::parse("application/vnd.example.sig"));
    s.manifest_put(&r, &ad, &StoredManifest { bytes: art, media_type: MediaType::OciManifest }, Some((&d, &desc)))
        .await
        .unwrap();
    assert_eq!(s.referrers(&r, &d).await.unwrap(), vec![desc]);
    assert!(s.referrers(&r, &d2).await.unwrap().is_empty());

    // deleting a manifest removes the tags that point at it
    assert!(s.manifest_delete(&r, &d).await.unwrap());
    assert!(!s.manifest_delete(&r, &d).await.unwrap());
    assert_eq!(s.tag_get(&r, &tag("latest")).await.unwrap(), None);
    assert!(s.manifest_get(&r, &d).await.unwrap().is_none());
}

async fn listings(s: Arc<dyn ContentStore>) {
    let m = StoredManifest { bytes: Bytes::from_static(b"{}"), media_type: MediaType::OciManifest };
    let d = Digest::sha256_of(b"{}");
    for name in ["b", "a", "a/z", "c/d/e"] {
        s.manifest_put(&repo(name), &d, &m, None).await.unwrap();
    }
    let all: Vec<String> = s.repo_list(None, 100).await.unwrap().iter().map(|r| r.to_string()).collect();
    assert_eq!(all, ["a", "a/z", "b", "c/d/e"]);
    let page: Vec<String> = s.repo_list(Some("a/z"), 2).await.unwrap().iter().map(|r| r.to_string()).collect();
    assert_eq!(page, ["b", "c/d/e"]);

    let r = repo("a");
    for t in ["v3", "v1", "v2", "latest"] {
        s.tag_put(&r, &tag(t), &d).await.unwrap();
    }
    let tags = |v: Vec<Tag>| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    assert_eq!(tags(s.tag_list(&r, None, 100).await.unwrap().unwrap()), ["latest", "v1", "v2", "v3"]);
    assert_eq!(tags(s.tag_list(&r, Some("latest"), 2).await.unwrap().unwrap()), ["v1", "v2"]);
    assert_eq!(tags(s.tag_list(&r, Some("v3"), 2).await.unwrap().unwrap()), Vec::<String>::new());
}
