//! An in-process fake registry for tests of the client and of the copy walk: it serves manifests, blobs and
//! referrers lists it was given (the referrers lists may claim any graph, as a hostile upstream could), and
//! records every request so tests can count what was fetched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use oci::{Descriptor, Digest, MediaType};

/// The fake registry's content and request log.
#[derive(Default)]
pub struct FakeRegistry {
    /// Manifests by digest string and by tag: media type and bytes.
    manifests: Mutex<HashMap<String, (String, Bytes)>>,
    blobs: Mutex<HashMap<String, Bytes>>,
    /// Referrers lists by subject digest string.
    referrers: Mutex<HashMap<String, Vec<Descriptor>>>,
    /// `METHOD /path` of every request, in order.
    log: Mutex<Vec<String>>,
}

impl FakeRegistry {
    /// Add a manifest (under its digest, and `tag` if given); returns its descriptor.
    pub fn manifest(&self, tag: Option<&str>, media_type: &str, bytes: &str) -> Descriptor {
        let d = Digest::sha256_of(bytes.as_bytes());
        let entry = (media_type.to_owned(), Bytes::from(bytes.to_owned()));
        let mut m = self.manifests.lock().unwrap();
        if let Some(t) = tag {
            m.insert(t.to_owned(), entry.clone());
        }
        m.insert(d.to_string(), entry);
        Descriptor::new(MediaType::parse(media_type), d, bytes.len() as u64)
    }

    /// An image manifest with one config and one layer blob (both added), distinguished by `label`.
    pub fn image(&self, tag: Option<&str>, label: &str) -> Descriptor {
        let config = self.blob(format!("{{\"label\":\"{label}\"}}").as_bytes());
        let layer = self.blob(format!("layer of {label}").as_bytes());
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            config.digest, config.size, layer.digest, layer.size
        );
        self.manifest(tag, "application/vnd.oci.image.manifest.v1+json", &body)
    }

    /// An index listing `children` (no platforms), with an annotation to make it distinct.
    pub fn index(&self, tag: Option<&str>, label: &str, children: &[&Descriptor]) -> Descriptor {
        let list: Vec<String> = children
            .iter()
            .map(|c| format!(r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#, c.media_type, c.digest, c.size))
            .collect();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}],"annotations":{{"label":"{label}"}}}}"#,
            list.join(",")
        );
        self.manifest(tag, "application/vnd.oci.image.index.v1+json", &body)
    }

    /// Add a blob; returns its descriptor.
    pub fn blob(&self, bytes: &[u8]) -> Descriptor {
        let d = Digest::sha256_of(bytes);
        self.blobs.lock().unwrap().insert(d.to_string(), Bytes::copy_from_slice(bytes));
        Descriptor::new(MediaType::parse("application/octet-stream"), d, bytes.len() as u64)
    }

    /// Claim that `referrer` refers to `subject` (no check that it really does).
    pub fn referrer(&self, subject: &Digest, referrer: &Descriptor) {
        self.referrers.lock().unwrap().entry(subject.to_string()).or_default().push(referrer.clone());
    }

    /// How many logged requests are `GET` and end with `suffix` (e.g. `/manifests/<digest>`).
    pub fn gets(&self, suffix: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.starts_with("GET ") && l.ends_with(suffix)).count()
    }

    /// Serve on 127.0.0.1 with an OS-picked port; returns the base URL.
    pub async fn serve(self: Arc<Self>) -> String {
        let router = Router::new().fallback(any(move |req: Request| {
            let me = self.clone();
            async move { me.answer(&req) }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    fn answer(&self, req: &Request) -> Response {
        let path = req.uri().path().to_owned();
        self.log.lock().unwrap().push(format!("{} {path}", req.method()));
        let mut parts = path.rsplitn(3, '/');
        let (reference, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        match kind {
            "manifests" => match self.manifests.lock().unwrap().get(reference) {
                Some((mt, bytes)) => {
                    let digest = Digest::sha256_of(bytes).to_string();
                    let headers = [("content-type", mt.clone()), ("docker-content-digest", digest)];
                    (headers, bytes.clone()).into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            },
            "blobs" => match self.blobs.lock().unwrap().get(reference) {
                Some(bytes) => bytes.clone().into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            },
            "referrers" => {
                let list = self.referrers.lock().unwrap().get(reference).cloned().unwrap_or_default();
                let index = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": list,
                });
                ([("content-type", "application/vnd.oci.image.index.v1+json")], index.to_string()).into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
}
