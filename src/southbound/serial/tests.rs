//! In-process tests of a serial session on a pty pair
//! (`SerialStream::pair`): framing modes, requests, a decoder that throws,
//! and the port closing.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

use super::session::{Ended, session};
use super::*;
use crate::reading::{Reading, Value};

const WITHIN: Duration = Duration::from_secs(5);

fn config(extra: &str) -> SerialConfig {
    let yaml = format!("{{name: dev, port: /dev/null, {extra}}}");
    let mut c: SerialConfig = serde_yaml_ng::from_str(&yaml).expect("config parses");
    c.resolve_paths(Path::new(env!("CARGO_MANIFEST_DIR")));
    c
}

struct Running {
    sensor: SerialStream,
    readings: crate::reading::batch::ReadingsReceiver,
    /// readings received but not yet looked at
    pending: std::collections::VecDeque<Reading>,
    cancel: CancellationToken,
    stats: Arc<SerialStats>,
    done: tokio::task::JoinHandle<Ended>,
}

fn start(cfg: SerialConfig) -> Running {
    let (port, sensor) = SerialStream::pair().expect("pty pair");
    let (rtx, readings) = crate::reading::batch::channel(64);
    let (ptx, _prx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let ctx = SourceContext::new("gw".into(), rtx, ptx, cancel.clone());
    let stats: Arc<SerialStats> = Arc::default();
    let st = stats.clone();
    let done = tokio::spawn(async move {
        let mut decoder = cfg.build_decoder().expect("decoder");
        let device: Arc<str> = "dev".into();
        // Keep the publishes receiver alive for the session's lifetime.
        let _keep = _prx;
        session(&cfg, port, &mut decoder, &st, &ctx, &device, &mut None).await
    });
    Running {
        sensor,
        readings,
        pending: Default::default(),
        cancel,
        stats,
        done,
    }
}

async fn next(r: &mut Running) -> (String, Value) {
    while r.pending.is_empty() {
        let batch = tokio::time::timeout(WITHIN, r.readings.recv())
            .await
            .expect("a reading in time")
            .expect("channel open");
        r.pending.extend(batch);
    }
    let got = r.pending.pop_front().expect("a reading");
    assert_eq!(&*got.device, "dev");
    (got.point.to_string(), got.value)
}

#[tokio::test]
async fn delimiter_frames_with_json() {
    let mut r = start(config(r#"frame: { delimiter: '\r\n' }"#));
    r.sensor
        .write_all(b"{\"temp\": 21.5}\r\n{\"temp\": 22}\r\n")
        .await
        .unwrap();
    assert_eq!(next(&mut r).await, ("temp".into(), Value::Float(21.5)));
    assert_eq!(next(&mut r).await, ("temp".into(), Value::Int(22)));
    r.cancel.cancel();
    assert!(matches!(r.done.await.unwrap(), Ended::Cancelled));
}

#[tokio::test]
async fn length_frames_with_the_binary_plugin() {
    let mut r = start(config(
        "frame: { length: 10 }, decoder: plugins/binary_frame.rhai",
    ));
    let mut bytes = super::decoder::tests::sds011(250, 500);
    bytes.extend(super::decoder::tests::sds011(10, 20));
    // Split mid-frame: the framer joins the pieces.
    r.sensor.write_all(&bytes[..7]).await.unwrap();
    r.sensor.flush().await.unwrap();
    r.sensor.write_all(&bytes[7..]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next(&mut r).await);
    }
    assert!(got.contains(&("pm2_5".into(), Value::Float(25.0))));
    assert!(got.contains(&("pm10".into(), Value::Float(2.0))));
}

#[tokio::test]
async fn length_frames_realign_after_a_pause() {
    let mut r = start(config(
        "frame: { length: 10, idle: 30ms }, decoder: plugins/binary_frame.rhai",
    ));
    // Three stray bytes (a sensor plugged in mid-frame), then the line is
    // quiet: the pause itself is what this test is about.
    r.sensor.write_all(&[0x01, 0x02, 0x03]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.sensor
        .write_all(&super::decoder::tests::sds011(77, 88))
        .await
        .unwrap();
    let mut got = [next(&mut r).await, next(&mut r).await, next(&mut r).await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got[1], ("pm2_5".into(), Value::Float(7.7)));
    assert_eq!(SerialStats::get(&r.stats.decode_errors), 0);
    assert_eq!(SerialStats::get(&r.stats.discarded_bytes), 3);
}

#[tokio::test]
async fn idle_frames() {
    let mut r = start(config(
        "frame: { idle: 30ms }, decoder: plugins/keyvalue.rhai",
    ));
    r.sensor.write_all(b"a=1;b=2").await.unwrap();
    let mut got = vec![next(&mut r).await, next(&mut r).await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![("a".into(), Value::Int(1)), ("b".into(), Value::Int(2))]
    );
    r.sensor.write_all(b"c=3").await.unwrap();
    assert_eq!(next(&mut r).await, ("c".into(), Value::Int(3)));
}

#[tokio::test]
async fn garbage_and_oversized_frames_are_counted_and_skipped() {
    let mut r = start(config("max_frame: 64, decoder: plugins/keyvalue.rhai"));
    let garbage = vec![b'#'; 10_000];
    r.sensor.write_all(&garbage).await.unwrap();
    r.sensor.write_all(b"\nok=1\n").await.unwrap();
    assert_eq!(next(&mut r).await, ("ok".into(), Value::Int(1)));
    assert_eq!(SerialStats::get(&r.stats.oversized_frames), 1);
    assert_eq!(SerialStats::get(&r.stats.discarded_bytes), 10_001);
}

#[tokio::test]
async fn a_decoder_that_throws_is_counted_and_reading_goes_on() {
    let mut r = start(config("decoder: plugins/keyvalue.rhai"));
    r.sensor.write_all(b"not a pair\nx=5\n").await.unwrap();
    assert_eq!(next(&mut r).await, ("x".into(), Value::Int(5)));
    assert_eq!(SerialStats::get(&r.stats.decode_errors), 1);
    assert_eq!(SerialStats::get(&r.stats.readings), 1);
}

#[tokio::test]
async fn requests_are_written_on_their_timer() {
    let mut r = start(config(r#"request: { data: 'R\r', every: 20ms }"#));
    let mut buf = [0u8; 6];
    tokio::time::timeout(WITHIN, r.sensor.read_exact(&mut buf))
        .await
        .expect("requests in time")
        .unwrap();
    assert_eq!(&buf, b"R\rR\rR\r");
    r.sensor.write_all(b"{\"w\": 1.5}\n").await.unwrap();
    assert_eq!(next(&mut r).await, ("w".into(), Value::Float(1.5)));
}

#[tokio::test]
async fn the_port_closing_ends_the_session() {
    let r = start(config(""));
    drop(r.sensor);
    let ended = tokio::time::timeout(WITHIN, r.done)
        .await
        .expect("session ends")
        .unwrap();
    assert!(matches!(ended, Ended::Lost(_)), "{ended:?}");
}

#[test]
fn frame_config_checks() {
    let bad = [
        "frame: { delimiter: '', length: 3 }",
        "frame: { delimiter: 'x', idle: 5ms }",
        "frame: { length: 0 }",
        "frame: { idle: 0ms }",
        r"frame: { delimiter: '\q' }",
    ];
    for b in bad {
        assert!(config(b).frame.mode().is_err(), "{b}");
    }
    assert_eq!(
        config(r"frame: { delimiter: '\r\n' }")
            .frame
            .mode()
            .unwrap()
            .0,
        FrameMode::Delimiter(b"\r\n".to_vec())
    );
}

#[test]
fn bad_settings_are_config_errors_with_paths() {
    let yaml = r#"
gateway: { id: gw }
devices:
  - name: s
    kind: serial
    port: /dev/ttyUSB0
    data_bits: 9
    stop_bits: 3
    max_frame: 8
    frame: { length: 16 }
    strict: true
    request: { data: 'x', every: 0s }
    reconnect: { min: 2s, max: 1s }
    points: [ { name: "a b" } ]
"#;
    let err = crate::settings::parse(yaml, Path::new("t.yaml")).unwrap_err();
    let text = err.to_string();
    for want in [
        "devices[0].data_bits (line 7",
        "devices[0].stop_bits (line 8",
        "devices[0].frame.length",
        "devices[0].request.every",
        "devices[0].reconnect",
        "devices[0].points[0].name",
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
    let unknown =
        "gateway: { id: gw }\ndevices:\n  - { name: s, kind: serial, port: /dev/x, bauds: 9600 }\n";
    let text = crate::settings::parse(unknown, Path::new("t.yaml"))
        .unwrap_err()
        .to_string();
    assert!(text.contains("bauds"), "{text}");
}
