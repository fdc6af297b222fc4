//! Webhooks end to end against a receiver in the test: CloudEvents JSON with an HMAC signature for pushes,
//! tag moves and deletes; per-endpoint filters; a receiver that is down for a while (and a server restart
//! meanwhile) still gets every event, at least once, with ids to deduplicate by; metrics count it all.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;

use crate::common::Server;
use crate::images::{multi_arch, PLATFORMS};

/// One request received: the signature header, the parsed CloudEvent, the exact body.
type Received = (Option<String>, serde_json::Value, Vec<u8>);

#[derive(Default)]
struct Inbox {
    events: Mutex<Vec<Received>>,
    down: AtomicBool,
}

/// A receiver on a free loopback port; returns its URL. While `down` is set it answers 503.
async fn receiver(inbox: Arc<Inbox>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let inbox = inbox.clone();
            async move {
                if inbox.down.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers.get("x-wharf-signature").map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(headers.get("content-type").unwrap(), "application/cloudevents+json");
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                inbox.events.lock().unwrap().push((sig, v, body.to_vec()));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn types(inbox: &Inbox) -> Vec<String> {
    inbox.events.lock().unwrap().iter().map(|(_, v, _)| v["type"].as_str().unwrap().to_owned()).collect()
}

async fn wait_for(inbox: &Inbox, what: &str, pred: impl Fn(&Inbox) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !pred(inbox) {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; got {:?}", types(inbox));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_tags_and_deletes_reach_webhooks_signed_and_filtered() {
    let (all, tags_only) = (Arc::new(Inbox::default()), Arc::new(Inbox::default()));
    let (url_all, url_tags) = (receiver(all.clone()).await, receiver(tags_only.clone()).await);
    let s = Server::start_config(&format!(
        "[gc]\nevery = \"1s\"\n\n\
         [[webhook]]\nname = \"all\"\nurl = \"{url_all}\"\nsecret = \"s3cret\"\n\n\
         [[webhook]]\nname = \"tags\"\nurl = \"{url_tags}\"\nevents = [\"tag.*\"]\nrepositories = [\"team/*\"]\n"
    ));
    let c = s.client();
    let img = multi_arch(9100, &PLATFORMS[..2], false, 4 * 1024);
    img.push(&c, "team/app", "v1").await;
    img.push(&c, "other/app", "v1").await;
    let r = c.req(Method::DELETE, "/v2/team/app/manifests/v1", &[], None).await;
    assert_eq!(r.status, 202);

    // 2 images x (2 children + index) pushes, 2 tag moves, 1 tag delete, and a collection.
    wait_for(&all, "every event", |i| {
        let t = types(i);
        t.iter().filter(|t| *t == "io.wharf.manifest.pushed").count() == 6
            && t.iter().filter(|t| *t == "io.wharf.tag.moved").count() == 2
            && t.contains(&"io.wharf.tag.deleted".to_owned())
            && t.contains(&"io.wharf.gc.finished".to_owned())
    })
    .await;
    wait_for(&tags_only, "the filtered events", |i| types(i).len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut filtered: Vec<(String, String)> = tags_only
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|(sig, v, _)| {
            assert!(sig.is_none(), "no secret, no signature");
            (v["type"].as_str().unwrap().to_owned(), v["subject"].as_str().unwrap().to_owned())
        })
        .collect();
    filtered.sort();
    assert_eq!(
        filtered,
        [
            ("io.wharf.tag.deleted".to_owned(), "team/app:v1".to_owned()),
            ("io.wharf.tag.moved".to_owned(), "team/app:v1".to_owned())
        ]
    );

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    for (sig, v, body) in all.events.lock().unwrap().iter() {
        let sig = sig.as_deref().expect("signed");
        let mac = hex::decode(sig.strip_prefix("sha256=").unwrap()).unwrap();
        ring::hmac::verify(&key, body, &mac).expect("the signature verifies over the exact body");
        assert_eq!(v["specversion"], "1.0");
        assert!(v["source"].as_str().unwrap().starts_with("wharf://"), "{v}");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    }
    let moved = all
        .events
        .lock()
        .unwrap()
        .iter()
        .find(|(_, v, _)| v["type"] == "io.wharf.tag.moved" && v["subject"] == "team/app:v1")
        .map(|(_, v, _)| v.clone())
        .unwrap();
    assert_eq!(moved["data"]["new"], img.index.digest.to_string(), "{moved}");
    assert_eq!(moved["data"]["old"], serde_json::Value::Null);
    assert!(s.metric("wharf_events_delivered_total", &["endpoint=\"all\""]).await >= 10);
    assert_eq!(s.metric("wharf_events_failed_total", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_and_a_restart_lose_nothing() {
    let inbox = Arc::new(Inbox::default());
    inbox.down.store(true, Ordering::SeqCst);
    let url = receiver(inbox.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, cfg) = (dir.path().join("data"), dir.path().join("wharf.toml"));
    std::fs::write(&cfg, format!("[[webhook]]\nurl = \"{url}\"\nretry_max = \"1s\"\nevents = [\"tag.*\"]\n")).unwrap();
    let s = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let c = s.client();
    let img = multi_arch(9200, &PLATFORMS[..1], false, 4 * 1024);
    for tag in ["a", "b", "c"] {
        img.push(&c, "team/app", tag).await;
    }
    // Failing for a while: attempts fail, the events wait in the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.metric("wharf_events_failed_total", &[]).await < 3 {
        assert!(std::time::Instant::now() < deadline, "no failed attempts counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.metric("wharf_events_pending", &[]).await, 3);
    assert!(s.terminate().success());
    let kept = std::fs::read_dir(data.join("meta/events/pending")).unwrap().count();
    assert_eq!(kept, 3, "undelivered events survive the restart on disk");

    let s = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    img.push(&s.client(), "team/app", "d").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    inbox.down.store(false, Ordering::SeqCst);
    wait_for(&inbox, "all four tag events", |i| {
        let subjects: BTreeSet<String> =
            i.events.lock().unwrap().iter().map(|(_, v, _)| v["subject"].as_str().unwrap().to_owned()).collect();
        subjects.len() == 4
    })
    .await;
    let ids: Vec<String> =
        inbox.events.lock().unwrap().iter().map(|(_, v, _)| v["id"].as_str().unwrap().to_owned()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 4, "one id per event: {ids:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(data.join("meta/events/pending")).unwrap().count() > 0 {
        assert!(std::time::Instant::now() < deadline, "delivered events are removed from the queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn webhook_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "[[webhook]]\nurl = \"ftp://x\"\nevents = [\"push\"]\ntimeout = \"soon\"\n").unwrap();
    let out = std::process::Command::new(crate::common::wharf_bin())
        .args(["config", "check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for key in ["webhook[0].url", "webhook[0].events[0]", "webhook[0].timeout"] {
        assert!(text.contains(key), "{key} in {text}");
    }
}
