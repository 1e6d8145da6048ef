//! The status page updating live in a real browser: headless chromium keeps
//! the page open and the test reads its DOM over the DevTools protocol
//! (`--remote-debugging-port`), without reloading. The event stream must
//! mark the page live and bring a new value into the same page.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_util::{SinkExt, StreamExt};
use rumqttc::QoS;

use crate::support::{Gateway, Sub, free_port};

const SECS: Duration = Duration::from_secs(20);

/// A child process (chromium, a client), killed on drop.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Ws = async_tungstenite::WebSocketStream<async_tungstenite::tokio::ConnectStream>;

/// Chromium with the page at `url` open, and a DevTools connection to it.
pub(crate) struct LivePage {
    _browser: Killed,
    _profile: tempfile::TempDir,
    ws: Ws,
    id: u64,
}

impl LivePage {
    /// Opens `url` (served on `http`) in headless chromium.
    pub(crate) async fn open(http: u16, url: &str, size: &str) -> LivePage {
        let profile = tempfile::tempdir().expect("profile");
        let devtools = free_port();
        let browser = Killed(
            Command::new("chromium")
                .args(crate::page::HEADLESS)
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(format!("--remote-debugging-port={devtools}"))
                .arg(format!("--window-size={size}"))
                .arg(url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run chromium"),
        );
        let ws_url = page_target(devtools, http).await;
        let (ws, _) = async_tungstenite::tokio::connect_async(ws_url.clone())
            .await
            .unwrap_or_else(|e| panic!("connect DevTools at {ws_url}: {e}"));
        LivePage {
            _browser: browser,
            _profile: profile,
            ws,
            id: 0,
        }
    }

    /// Evaluates `expr` in the page; returns its string value.
    pub(crate) async fn eval(&mut self, expr: &str) -> String {
        let params = serde_json::json!({"expression": expr, "returnByValue": true});
        let r = self.call("Runtime.evaluate", params).await;
        r["result"]["value"].as_str().unwrap_or("").to_string()
    }

    /// A PNG of the page `width` px wide (and `height` tall).
    pub(crate) async fn screenshot(&mut self, width: u32, height: u32) -> Vec<u8> {
        let metrics = serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600});
        self.call("Emulation.setDeviceMetricsOverride", metrics)
            .await;
        // the page draws its charts again at the new width (on resize)
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({"format": "png"}),
            )
            .await;
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG")
    }

    /// Calls a DevTools `method`; returns its result.
    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.id += 1;
        let req = serde_json::json!({"id": self.id, "method": method, "params": params});
        self.ws
            .send(Message::Text(req.to_string()))
            .await
            .expect("send to devtools");
        loop {
            let m = tokio::time::timeout(SECS, self.ws.next())
                .await
                .expect("devtools answers")
                .expect("devtools open")
                .expect("devtools message");
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                if v["id"] == self.id {
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluates `expr` every 100 ms until `ok` holds for its value (at
    /// most `within`); returns it.
    pub(crate) async fn until(
        &mut self,
        within: Duration,
        expr: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let v = self.eval(expr).await;
            if ok(&v) {
                return v;
            }
            if seen.last() != Some(&v) {
                seen.push(v);
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed it: {expr}; saw {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The DevTools web socket of the page on `http`, once chromium answers.
async fn page_target(devtools: u16, http: u16) -> String {
    let deadline = Instant::now() + SECS;
    loop {
        assert!(Instant::now() < deadline, "no DevTools page target");
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", devtools)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{devtools}\r\nConnection: close\r\n\r\n"
            );
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            if let Ok(serde_json::Value::Array(targets)) = serde_json::from_str(body)
                && let Some(url) = targets
                    .iter()
                    .find(|t| {
                        t["type"] == "page"
                            && t["url"]
                                .as_str()
                                .is_some_and(|u| u.contains(&http.to_string()))
                    })
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return url.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn status_page_updates_live_in_chromium_without_reloading() {
    let http = free_port();
    let gw = Gateway::start(&format!(
        r#"
gateway:
  id: live-gw
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
http:
  listen: "127.0.0.1:{http}"
devices:
  - name: line
    kind: simulated
    poll: 200ms
    points:
      - {{ name: parts, signal: counter }}
"#
    ));
    let mut sub = Sub::connect(gw.port, &["live-gw/line/parts"], QoS::AtMostOnce).await;
    sub.next(SECS).await;

    let _one_browser = crate::page::BROWSER.lock().await;
    let mut page = LivePage::open(http, &format!("http://127.0.0.1:{http}/"), "800,600").await;
    let read = "(() => { const l = document.getElementById('live'); \
                const v = document.getElementById('val-line-parts'); \
                return (l ? l.textContent : '') + '|' + (v ? v.textContent : ''); })()";
    let mut seen = Vec::new();
    let deadline = Instant::now() + SECS;
    // the same page (no reload): marked live, and its value moves
    let first = loop {
        let s = page.eval(read).await;
        if let Some(("live", v)) = s.split_once('|')
            && let Ok(n) = v.parse::<u64>()
        {
            break n;
        }
        seen.push(s);
        assert!(Instant::now() < deadline, "page never went live: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let later = loop {
        let s = page.eval(read).await;
        if let Some(("live", v)) = s.split_once('|')
            && let Ok(n) = v.parse::<u64>()
            && n > first
        {
            break n;
        }
        seen.push(s);
        assert!(Instant::now() < deadline, "value never changed: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(later > first);
    let loads = page
        .eval("String(performance.getEntriesByType('navigation').length)")
        .await;
    assert_eq!(loads, "1", "one navigation: the page was not reloaded");
}
