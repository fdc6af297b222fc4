//! The web console in a real browser: Debian's Chromium, headless, driven over WebDriver (chromedriver) by
//! plain HTTP calls. A seeded registry is browsed (repositories, search, tags with platforms and pull commands,
//! an image with platforms, referrers and history, the status pages) at desktop and phone widths, a tag is
//! deleted through the console's form, and screenshots are saved under `target/console-screenshots/`.
//! Access rules and the CSRF checks are exercised over HTTP.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{client_as, config, users_dir, ADMIN_PW, ALICE_PW};
use crate::common::{die_with_parent, Server};
use crate::images::{multi_arch, PLATFORMS};

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        crate::external::require_tool("chromium", "chromium");
        let port = crate::external::free_port();
        let mut cmd = crate::external::require_tool("chromedriver", "chromium-driver");
        cmd.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let driver = cmd.spawn().expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = crate::common::http().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let r: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_owned();
        Browser { driver, base, session, http }
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn title(&self) -> String {
        self.cmd(Method::GET, "/title", None).await.as_str().unwrap_or_default().to_owned()
    }

    async fn url(&self) -> String {
        self.cmd(Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Element ids matching a CSS selector.
    async fn find(&self, css: &str) -> Vec<String> {
        let v = self.cmd(Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array()
            .map(|a| a.iter().filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    async fn text(&self, css: &str) -> String {
        let mut out = Vec::new();
        for id in self.find(css).await {
            let t = self.cmd(Method::GET, &format!("/element/{id}/text"), None).await;
            out.push(t.as_str().unwrap_or_default().to_owned());
        }
        out.join("\n")
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await.into_iter().next().unwrap_or_else(|| panic!("nothing matches {css}"));
        self.cmd(Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let v = self.cmd(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }

    /// Whether the page is wider than the window (a phone would scroll sideways).
    async fn overflows(&self) -> bool {
        let v = self
            .cmd(
                Method::POST,
                "/execute/sync",
                Some(json!({"script": "return document.documentElement.scrollWidth > window.innerWidth + 1;", "args": []})),
            )
            .await;
        v.as_bool().unwrap_or(true)
    }
}

async fn seed(s: &Server) -> crate::images::Image {
    let c = s.client();
    let app = multi_arch(9500, &PLATFORMS[..3], false, 16 * 1024);
    app.push(&c, "team/app", "v1").await;
    app.push(&c, "team/app", "stable").await;
    multi_arch(9501, &PLATFORMS[..1], false, 8 * 1024).push(&c, "team/app", "v0").await;
    multi_arch(9502, &PLATFORMS[..2], true, 8 * 1024).push(&c, "other/lib", "2.0").await;
    crate::isolation::push_referrer(&c, "team/app", &app.index, "application/vnd.example.sbom").await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_browses_the_console_and_deletes_a_tag() {
    let s = Server::start_config("[console]\nactions = true\n");
    let app = seed(&s).await;
    let b = Browser::start(1280, 900).await;

    b.go(&format!("{}/", s.url)).await;
    assert_eq!(b.title().await, "Repositories · Wharf");
    let repos = b.text("#repos tbody").await;
    assert!(repos.contains("team/app") && repos.contains("other/lib"), "{repos}");
    b.screenshot("repositories").await;

    // Search narrows the list.
    b.go(&format!("{}/?q=other", s.url)).await;
    let repos = b.text("#repos tbody").await;
    assert!(repos.contains("other/lib") && !repos.contains("team/app"), "{repos}");

    // A repository: every tag with its platforms, size, age and pull commands.
    b.go(&format!("{}/", s.url)).await;
    b.click("#repos a[href='/ui/tags/team/app']").await;
    assert!(b.url().await.ends_with("/ui/tags/team/app"), "{}", b.url().await);
    let row = b.text("#tags tr[data-tag='v1']").await;
    for want in ["v1", "linux/amd64", "linux/arm64/v8", "linux/arm/v7", &format!("{}/team/app:v1", s.addr)] {
        assert!(row.contains(want), "{want} in {row}");
    }
    assert!(b.text("#tags tbody").await.contains("stable"));
    b.screenshot("tags").await;

    // An image: platforms, referrers, history.
    b.click("#tags tr[data-tag='v1'] td a").await;
    assert_eq!(b.text("#digest").await, app.index.digest.to_string());
    assert_eq!(b.find("#platforms tbody tr").await.len(), 3);
    assert!(b.text("#referrers").await.contains("application/vnd.example.sbom"));
    assert!(b.text("#history").await.contains("created"), "{}", b.text("#history").await);
    b.screenshot("image-index").await;
    // Down to one platform: its config summary and layers.
    b.click("#platforms tbody tr a").await;
    assert!(b.text("#config").await.contains("amd64"), "{}", b.text("#config").await);
    assert!(!b.find("#layers tbody tr").await.is_empty());
    b.screenshot("image-platform").await;

    // The status pages render without upstreams, sync entries or collections.
    for (page, id) in [("mirror", "#empty"), ("sync", "#empty"), ("storage", "#gc")] {
        b.go(&format!("{}/ui/{page}", s.url)).await;
        assert!(!b.text(id).await.is_empty(), "{page}");
    }
    b.screenshot("storage").await;

    // Delete a tag through the form; the registry agrees.
    b.go(&format!("{}/ui/tags/team/app", s.url)).await;
    b.click("#tags tr[data-tag='v0'] button").await;
    // The click returns once the form is submitted, perhaps before the page it redirects to has loaded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.client().get("/v2/team/app/manifests/v0").await.status != 404 {
        assert!(std::time::Instant::now() < deadline, "the tag was never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The tags page the form leads back to, loaded, without the row.
    while b.find("#tags").await.is_empty() || !b.find("#tags tr[data-tag='v0']").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the row is gone");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(b.find("#tags tr[data-tag='v1']").await.len() == 1, "the other tags stay");
    assert!(b.url().await.ends_with("/ui/tags/team/app"));
    assert_eq!(s.client().get("/v2/team/app/manifests/v0").await.status, 404);
    let h = s.client().get("/_wharf/history/team/app/v0").await.json();
    assert_eq!(h["events"].as_array().unwrap().last().unwrap()["source"], "console:anonymous", "{h}");
    drop(b);

    // A phone-width window: no sideways scrolling.
    let phone = Browser::start(390, 844).await;
    phone.go(&format!("{}/ui/tags/team/app", s.url)).await;
    assert!(!phone.overflows().await, "the tags page fits a phone-width screen");
    phone.screenshot("tags-phone").await;
    phone.go(&format!("{}/ui/image/team/app?ref=v1", s.url)).await;
    assert!(!phone.overflows().await, "the image page fits a phone-width screen");
}

#[tokio::test]
async fn forms_need_their_token_and_the_same_origin_and_read_only_is_the_default() {
    let s = Server::start_config("[console]\nactions = true\n");
    seed(&s).await;
    let c = s.client();
    let page = String::from_utf8(c.get("/ui/tags/team/app").await.body.to_vec()).unwrap();
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = |csrf: &str| format!("repo=team%2Fapp&tag=v0&csrf={csrf}").into_bytes();
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let r = c.req(Method::POST, "/ui/action/tag-delete", &[ct], Some(form("00"))).await;
    assert_eq!(r.status, 403, "a wrong token");
    let evil = [ct, ("origin", "http://evil.example")];
    let r = c.req(Method::POST, "/ui/action/tag-delete", &evil, Some(form(&csrf))).await;
    assert_eq!(r.status, 403, "another origin");
    let cross = [ct, ("sec-fetch-site", "cross-site")];
    assert_eq!(c.req(Method::POST, "/ui/action/tag-delete", &cross, Some(form(&csrf))).await.status, 403);
    assert_eq!(c.get("/v2/team/app/manifests/v0").await.status, 200, "nothing was deleted");
    let r = c.req(Method::POST, "/ui/action/tag-delete", &[ct], Some(form(&csrf))).await;
    assert_eq!(r.status, 200, "303 to the tags page, followed");
    assert!(!String::from_utf8_lossy(&r.body).contains("data-tag=\"v0\""));
    assert_eq!(c.get("/v2/team/app/manifests/v0").await.status, 404);

    // Without [console] actions the pages offer no forms and the actions refuse.
    let ro = Server::start();
    seed(&ro).await;
    let page = String::from_utf8(ro.client().get("/ui/tags/team/app").await.body.to_vec()).unwrap();
    assert!(!page.contains("<form class=\"inline\" method=\"post\""), "read-only by default");
    let r = ro.client().req(Method::POST, "/ui/action/gc", &[ct], Some(b"csrf=x".to_vec())).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn the_console_honours_the_access_rules() {
    let users = users_dir();
    let s = Server::start_config(&(config(users.path(), "") + "\n[console]\nactions = true\n"));
    let admin = client_as(&s, "admin", ADMIN_PW);
    for repo in ["team/app", "readonly/base", "secret/thing"] {
        multi_arch(9600, &PLATFORMS[..1], false, 4 * 1024).push(&admin, repo, "v1").await;
    }
    // Anonymous: asked for credentials (only public/* is open to anonymous, and it is empty).
    let r = s.client().get("/").await;
    assert!(r.status == 200 || r.status == 401);
    let r = s.client().get("/ui/tags/team/app").await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));

    let alice = client_as(&s, "alice", ALICE_PW);
    let home = String::from_utf8(alice.get("/").await.body.to_vec()).unwrap();
    assert!(home.contains("team/app") && home.contains("readonly/base") && !home.contains("secret/thing"), "{home}");
    assert_eq!(alice.get("/ui/tags/secret/thing").await.status, 403);
    assert_eq!(alice.get("/ui/image/secret/thing?ref=v1").await.status, 403);
    assert_eq!(alice.get("/_wharf/console/tags/secret/thing").await.status, 403);
    assert_eq!(alice.get("/ui/storage").await.status, 403, "status pages need the admin action");
    // Delete buttons only where alice may delete.
    let team = String::from_utf8(alice.get("/ui/tags/team/app").await.body.to_vec()).unwrap();
    let readonly = String::from_utf8(alice.get("/ui/tags/readonly/base").await.body.to_vec()).unwrap();
    assert!(team.contains("Delete tag v1") && !readonly.contains("Delete tag"), "{readonly}");
    // JSON of the same data.
    let j = alice.get("/_wharf/console/repositories").await.json();
    let names: Vec<&str> = j["repositories"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["readonly/base", "team/app"]);
    let storage = String::from_utf8(admin.get("/ui/storage").await.body.to_vec()).unwrap();
    assert!(storage.contains("Run a collection now"), "{storage}");
}
