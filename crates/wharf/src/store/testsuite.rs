//! The one conformance suite every [`ContentStore`] back-end must pass. Each back-end's module calls
//! [`run_all`] with a factory for fresh, empty stores with the given upload limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Descriptor, Digest, MediaType, RepoName, Tag};

use super::{ByteRange, ByteStream, ContentStore, StoreError, StoredManifest, UploadLimits};

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

/// A clock that the test moves forward by hand.
#[derive(Clone, Default)]
pub struct TestClock(Arc<AtomicU64>);

impl TestClock {
    /// Move time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    /// Limits reading this clock.
    pub fn limits(&self, expiry: Duration, max_open: usize) -> UploadLimits {
        let offset = self.0.clone();
        let clock = Arc::new(move || SystemTime::now() + Duration::from_secs(offset.load(Ordering::SeqCst)));
        UploadLimits { expiry, max_open, clock }
    }
}

/// Run every check against fresh stores from `make`.
pub async fn run_all(mut make: impl FnMut(UploadLimits) -> Arc<dyn ContentStore>) {
    let plain = || UploadLimits::default();
    blobs(make(plain())).await;
    large_blob_round_trip(make(plain())).await;
    uploads(make(plain())).await;
    manifests_tags_referrers(make(plain())).await;
    listings(make(plain())).await;
    meta(make(plain())).await;
    blob_references(make(plain())).await;
    emptied_repositories(make(plain())).await;
    gc_listings(make(plain())).await;
    quarantine(make(plain())).await;
    let clock = TestClock::default();
    upload_expiry(make(clock.limits(HOUR, 100)), &clock).await;
    let clock = TestClock::default();
    upload_cap(make(clock.limits(HOUR, 3)), &clock).await;
}

const HOUR: Duration = Duration::from_secs(3600);

async fn upload_expiry(s: Arc<dyn ContentStore>, clock: &TestClock) {
    let r = repo("team/app");
    let id = s.upload_start(&r).await.unwrap();
    s.upload_append(&id, 0, body(&[b"abc"])).await.unwrap();
    let idle = s.upload_start(&r).await.unwrap();
    clock.advance(HOUR / 2);
    // Activity counts from the last bytes received, not from the start.
    assert_eq!(s.upload_append(&id, 3, body(&[b"def"])).await.unwrap(), 6);
    clock.advance(HOUR / 2 + Duration::from_secs(60));
    assert!(matches!(s.upload_state(&idle).await, Err(StoreError::UploadUnknown(_))), "idle > expiry");
    assert!(matches!(s.upload_append(&idle, 0, body(&[b"x"])).await, Err(StoreError::UploadUnknown(_))));
    assert!(matches!(s.upload_finish(&idle, &Digest::sha256_of(b"")).await, Err(StoreError::UploadUnknown(_))));
    assert!(matches!(s.upload_abort(&idle).await, Err(StoreError::UploadUnknown(_))));
    assert_eq!(s.upload_state(&id).await.unwrap().size, 6, "active 31 minutes ago: alive");
    let swept = s.sweep().await.unwrap();
    assert_eq!(swept.uploads, 1);
    assert_eq!(s.upload_state(&id).await.unwrap().size, 6, "the sweep spares live sessions");
    clock.advance(2 * HOUR);
    assert!(matches!(s.upload_finish(&id, &Digest::sha256_of(b"abcdef")).await, Err(StoreError::UploadUnknown(_))));
    assert!(s.blob_stat(&Digest::sha256_of(b"abcdef")).await.unwrap().is_none());
    assert_eq!(s.sweep().await.unwrap().uploads, 1);
    assert_eq!(s.sweep().await.unwrap().uploads, 0);
}

async fn upload_cap(s: Arc<dyn ContentStore>, clock: &TestClock) {
    let r = repo("team/app");
    let a = s.upload_start(&r).await.unwrap();
    let b = s.upload_start(&r).await.unwrap();
    s.upload_start(&r).await.unwrap();
    assert!(matches!(s.upload_start(&r).await, Err(StoreError::TooManyUploads { open: 3, limit: 3 })));
    // Ending a session frees its slot, whether finished or cancelled.
    s.upload_abort(&a).await.unwrap();
    let c = s.upload_start(&r).await.unwrap();
    s.upload_finish(&b, &Digest::sha256_of(b"")).await.unwrap();
    s.upload_start(&r).await.unwrap();
    assert!(matches!(s.upload_start(&r).await, Err(StoreError::TooManyUploads { .. })));
    // Expired sessions make room without waiting for the sweeper.
    s.upload_append(&c, 0, body(&[b"x"])).await.unwrap();
    clock.advance(2 * HOUR);
    s.upload_start(&r).await.unwrap();
}

async fn blob_references(s: Arc<dyn ContentStore>) {
    let r = repo("refs/app");
    let config = Digest::sha256_of(b"config");
    let layer = Digest::sha256_of(b"layer");
    let unused = Digest::sha256_of(b"unused");
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":6}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
    );
    let image = Bytes::from(image);
    let md = Digest::sha256_of(&image);
    let stored = StoredManifest { bytes: image.clone(), media_type: MediaType::OciManifest };
    s.manifest_put(&r, &md, &stored, None).await.unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{}}}]}}"#,
        image.len()
    );
    let index = Bytes::from(index);
    let id = Digest::sha256_of(&index);
    s.manifest_put(&r, &id, &StoredManifest { bytes: index, media_type: MediaType::OciIndex }, None).await.unwrap();
    assert_eq!(s.blob_referenced_by(&r, &config).await.unwrap(), Some(md.clone()));
    assert_eq!(s.blob_referenced_by(&r, &layer).await.unwrap(), Some(md.clone()));
    assert_eq!(s.blob_referenced_by(&r, &unused).await.unwrap(), None);
    // An index's child manifests are manifests, not blobs.
    assert_eq!(s.blob_referenced_by(&r, &md).await.unwrap(), None);
    // Per repository.
    assert_eq!(s.blob_referenced_by(&repo("refs/other"), &layer).await.unwrap(), None);
    assert!(s.manifest_delete(&r, &md).await.unwrap());
    assert_eq!(s.blob_referenced_by(&r, &layer).await.unwrap(), None);
}

/// A repository whose hosted content is all deleted no longer exists (its name goes back to the default
/// upstream), whatever the back-end leaves behind.
async fn emptied_repositories(s: Arc<dyn ContentStore>) {
    let names = |v: Vec<RepoName>| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    let r = repo("gone/app");
    let d = Digest::sha256_of(b"layer");
    s.blob_put(&d, None, body(&[b"layer"])).await.unwrap();
    s.blob_link(&r, &d).await.unwrap();
    assert!(s.repo_exists(&r).await.unwrap());
    // a repository with content lists its tags, none yet (a push in progress, or all manifests deleted)
    assert_eq!(s.tag_list(&r, None, 10).await.unwrap(), Some(Vec::<Tag>::new()));
    assert!(s.blob_unlink(&r, &d).await.unwrap());
    assert!(!s.repo_exists(&r).await.unwrap(), "after the last blob link went");

    s.tag_put(&r, &tag("v1"), &d).await.unwrap();
    assert!(s.repo_exists(&r).await.unwrap());
    assert_eq!(names(s.repo_list(None, 100).await.unwrap()), ["gone/app"]);
    assert!(s.tag_delete(&r, &tag("v1")).await.unwrap());
    assert!(!s.repo_exists(&r).await.unwrap(), "after the last tag went");
    assert!(s.tag_list(&r, None, 100).await.unwrap().is_none());
    assert!(s.repo_list(None, 100).await.unwrap().is_empty());

    let m = StoredManifest { bytes: Bytes::from_static(b"{}"), media_type: MediaType::OciManifest };
    let md = Digest::sha256_of(b"{}");
    s.manifest_put(&r, &md, &m, None).await.unwrap();
    s.tag_put(&r, &tag("latest"), &md).await.unwrap();
    assert!(s.repo_exists(&r).await.unwrap());
    assert!(s.manifest_delete(&r, &md).await.unwrap());
    assert!(!s.repo_exists(&r).await.unwrap(), "after the last manifest (and its tag) went");
    assert!(s.tag_list(&r, None, 100).await.unwrap().is_none());
    assert!(s.repo_list(None, 100).await.unwrap().is_empty());
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
    assert!(s.meta_delete("sync/b.json").await.unwrap());
    assert!(!s.meta_delete("sync/b.json").await.unwrap(), "a second delete finds nothing");
    assert_eq!(s.meta_get("sync/b.json").await.unwrap(), None);
    assert_eq!(s.meta_list("sync").await.unwrap(), ["sync/a.json"]);
    assert!(s.meta_delete("../escape").await.is_err(), "keys are checked on delete too");
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
    assert!(!s.repo_exists(&a).await.unwrap());
    s.blob_link(&a, &d).await.unwrap();
    assert!(s.blob_linked(&a, &d).await.unwrap());
    // a repository with only a blob link is hosted content (a push in progress); other names are not
    assert!(s.repo_exists(&a).await.unwrap());
    assert!(!s.repo_exists(&b).await.unwrap());
    assert!(!s.blob_linked(&b, &d).await.unwrap());
    assert!(s.blob_unlink(&a, &d).await.unwrap());
    assert!(!s.blob_linked(&a, &d).await.unwrap());
    // many at once: counts what was linked, leaves the rest
    let more: Vec<Digest> = [&b"m1"[..], b"m2", b"m3"].iter().map(|x| Digest::sha256_of(x)).collect();
    for (x, m) in [&b"m1"[..], b"m2", b"m3"].iter().zip(&more) {
        s.blob_put(m, None, body(&[x])).await.unwrap();
        s.blob_link(&a, m).await.unwrap();
    }
    assert_eq!(s.blob_unlink_many(&a, &[more[0].clone(), more[2].clone(), d.clone()]).await.unwrap(), 2);
    assert!(!s.blob_linked(&a, &more[0]).await.unwrap() && s.blob_linked(&a, &more[1]).await.unwrap());
    assert!(!s.blob_linked(&a, &more[2]).await.unwrap());
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

    // many at once: their tags and referrer entries go, other manifests and tags stay
    let index = |n: &str| Bytes::from(format!(r#"{{"schemaVersion":2,"manifests":[],"annotations":{{"n":"{n}"}}}}"#));
    let (a, b) = (index("a"), index("b"));
    let (da, db) = (Digest::sha256_of(&a), Digest::sha256_of(&b));
    for (bytes, d) in [(&a, &da), (&b, &db)] {
        let m = StoredManifest { bytes: bytes.clone(), media_type: MediaType::OciIndex };
        s.manifest_put(&r, d, &m, None).await.unwrap();
    }
    s.tag_put(&r, &tag("a1"), &da).await.unwrap();
    s.tag_put(&r, &tag("a2"), &da).await.unwrap();
    s.tag_put(&r, &tag("b1"), &db).await.unwrap();
    let sig = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"subject":{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{da}","size":{}}}}}"#,
        a.len()
    ));
    let ds = Digest::sha256_of(&sig);
    let sdesc = Descriptor::new(MediaType::OciIndex, ds.clone(), sig.len() as u64);
    s.manifest_put(&r, &ds, &StoredManifest { bytes: sig, media_type: MediaType::OciIndex }, Some((&da, &sdesc)))
        .await
        .unwrap();
    assert_eq!(s.referrers(&r, &da).await.unwrap().len(), 1);
    let gone = [da.clone(), ds.clone(), Digest::sha256_of(b"never stored")];
    assert_eq!(s.manifest_delete_many(&r, &gone).await.unwrap(), 2);
    assert_eq!(s.tag_get(&r, &tag("a1")).await.unwrap(), None);
    assert_eq!(s.tag_get(&r, &tag("a2")).await.unwrap(), None);
    assert_eq!(s.tag_get(&r, &tag("b1")).await.unwrap(), Some(db.clone()));
    assert!(s.referrers(&r, &da).await.unwrap().is_empty());
    assert!(s.manifest_get(&r, &da).await.unwrap().is_none() && s.manifest_get(&r, &db).await.unwrap().is_some());
    assert_eq!(s.tag_list(&r, None, 10).await.unwrap().unwrap(), vec![tag("b1")]);
}

async fn listings(s: Arc<dyn ContentStore>) {
    let m = StoredManifest { bytes: Bytes::from_static(b"{}"), media_type: MediaType::OciManifest };
    let d = Digest::sha256_of(b"{}");
    for name in ["b", "a", "a/z", "c/d/e"] {
        s.manifest_put(&repo(name), &d, &m, None).await.unwrap();
    }
    let all: Vec<String> = s.repo_list(None, 100).await.unwrap().iter().map(|r| r.to_string()).collect();
    assert_eq!(all, ["a", "a/z", "b", "c/d/e"]);
    assert!(s.repo_exists(&repo("c/d/e")).await.unwrap());
    assert!(!s.repo_exists(&repo("c/d")).await.unwrap(), "a parent of a repository is not one");
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

/// What the garbage collector lists and deletes with, the same on every back-end.
async fn gc_listings(s: Arc<dyn ContentStore>) {
    let r = repo("gc/app");
    let d = Digest::sha256_of(b"pool blob");
    let missing = Digest::sha256_of(b"never stored");
    // A link never names missing bytes.
    assert!(matches!(s.blob_link(&r, &missing).await, Err(StoreError::BlobUnknown(_))));
    assert!(!s.blob_linked(&r, &missing).await.unwrap());
    s.blob_put(&d, None, body(&[b"pool blob"])).await.unwrap();
    let before = SystemTime::now() - Duration::from_secs(60);
    let gate = s.gc_gate();
    gate.begin().await;
    s.blob_link(&r, &d).await.unwrap();
    assert_eq!(gate.linked_since_begin(&d), Some(true), "links are recorded while a collection runs");
    assert_eq!(gate.linked_since_begin(&missing), Some(false));
    // An overlapping collection does not end the first one's record.
    gate.begin().await;
    gate.end();
    assert_eq!(gate.linked_since_begin(&d), Some(true));
    gate.end();
    assert_eq!(gate.linked_since_begin(&d), Some(false), "and only then");
    // A pusher's existence check answers like `blob_linked`.
    assert!(s.blob_seen(&r, &d).await.unwrap());
    assert!(!s.blob_seen(&r, &missing).await.unwrap());
    assert!(!s.blob_seen(&repo("gc/elsewhere"), &d).await.unwrap());
    // A repository holding only links is listed for the collector, not in the catalog.
    let names = |v: Vec<RepoName>| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(names(s.repo_list_all(None, 10).await.unwrap()), ["gc/app"]);
    assert!(s.repo_list(None, 10).await.unwrap().is_empty());
    assert!(s.repo_list_all(Some("gc/app"), 10).await.unwrap().is_empty());
    let links = s.blob_link_list(&r).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].digest, d);
    assert!(links[0].modified > before);
    let m = StoredManifest { bytes: Bytes::from_static(b"{}"), media_type: MediaType::OciManifest };
    let md = Digest::sha256_of(b"{}");
    s.manifest_put(&r, &md, &m, None).await.unwrap();
    let listed = s.manifest_list(&r).await.unwrap();
    assert_eq!(listed.iter().map(|m| &m.digest).collect::<Vec<_>>(), [&md]);
    assert!(listed[0].modified > before);
    assert!(s.manifest_list(&repo("nothing/here")).await.unwrap().is_empty());
    // The pool by shard: the first byte of the hex digest.
    let shard = u8::from_str_radix(&d.hex()[..2], 16).unwrap();
    let pool = s.pool_list(shard).await.unwrap();
    let mine: Vec<_> = pool.iter().filter(|e| e.digest == d).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].size, 9);
    assert!(s.pool_list(shard.wrapping_add(1)).await.unwrap().iter().all(|e| e.digest != d));
    // Deleted only when not modified after the cutoff.
    assert_eq!(s.pool_delete_if_older(&d, before).await.unwrap(), None);
    assert!(s.blob_stat(&d).await.unwrap().is_some());
    let later = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(s.pool_delete_if_older(&d, later).await.unwrap(), Some(9));
    assert!(s.blob_stat(&d).await.unwrap().is_none());
    assert_eq!(s.pool_delete_if_older(&d, later).await.unwrap(), None);
    // Linking refreshes the pool blob's time (another process's collector re-checks it).
    let old = Digest::sha256_of(b"old blob");
    s.blob_put(&old, None, body(&[b"old blob"])).await.unwrap();
    let t0 = SystemTime::now();
    s.blob_link(&repo("gc/other"), &old).await.unwrap();
    let shard = u8::from_str_radix(&old.hex()[..2], 16).unwrap();
    let e = s.pool_list(shard).await.unwrap().into_iter().find(|e| e.digest == old).unwrap();
    assert!(e.modified + Duration::from_secs(1) >= t0);
}

/// What the scrub moves aside stops being served; the rest of the repository stays as it was.
async fn quarantine(s: Arc<dyn ContentStore>) {
    let r = repo("scrub/app");
    let d = Digest::sha256_of(b"rotten blob");
    s.blob_put(&d, None, body(&[b"rotten blob"])).await.unwrap();
    s.blob_link(&r, &d).await.unwrap();
    let where_ = s.blob_quarantine(&d, "100").await.unwrap().expect("moved");
    assert!(where_.contains("quarantine") && where_.contains(d.hex()), "{where_}");
    assert!(s.blob_stat(&d).await.unwrap().is_none() && s.blob_open(&d, None).await.unwrap().is_none());
    let shard = u8::from_str_radix(&d.hex()[..2], 16).unwrap();
    assert!(s.pool_list(shard).await.unwrap().iter().all(|e| e.digest != d), "no longer in the pool");
    assert!(s.blob_quarantine(&d, "100").await.unwrap().is_none(), "only once");
    assert!(matches!(s.blob_link(&repo("scrub/other"), &d).await, Err(StoreError::BlobUnknown(_))));
    // A blob can come back (a mirror refetch, a new push) after its bad copy was moved aside.
    s.blob_put(&d, None, body(&[b"rotten blob"])).await.unwrap();
    assert!(s.blob_stat(&d).await.unwrap().is_some());

    let subject = Digest::sha256_of(b"subject");
    let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#);
    let md = Digest::sha256_of(&bytes);
    let m = StoredManifest { bytes: bytes.clone(), media_type: MediaType::OciManifest };
    let desc = Descriptor::new(MediaType::OciManifest, md.clone(), bytes.len() as u64);
    s.manifest_put(&r, &md, &m, Some((&subject, &desc))).await.unwrap();
    s.tag_put(&r, &tag("v1"), &md).await.unwrap();
    assert_eq!(s.referrers(&r, &subject).await.unwrap().len(), 1);
    let where_ = s.manifest_quarantine(&r, &md, "100").await.unwrap().expect("moved");
    assert!(where_.contains("scrub/app") && where_.contains(md.hex()), "{where_}");
    assert!(s.manifest_get(&r, &md).await.unwrap().is_none());
    assert!(s.manifest_list(&r).await.unwrap().is_empty());
    assert!(s.referrers(&r, &subject).await.unwrap().is_empty(), "no referrer names a manifest that is gone");
    assert_eq!(s.tag_get(&r, &tag("v1")).await.unwrap(), Some(md.clone()), "tags stay for a refetch");
    assert!(s.manifest_quarantine(&r, &md, "100").await.unwrap().is_none());
    assert!(s.manifest_quarantine(&repo("scrub/none"), &md, "100").await.unwrap().is_none());
}
