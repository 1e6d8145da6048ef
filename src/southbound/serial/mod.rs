//! The `serial` device kind: sensors that print lines or frames on a serial
//! port (scales, NMEA GPS receivers, Arduinos, particle counters).
//!
//! Owns [`SerialConfig`] and its checks, and the [`Serial`] source. The
//! framer ([`framing`]) and the decoders ([`decoder`]) are pure; the port,
//! the reconnect loop and the request timer live in [`session`]. Must not
//! publish anything but readings and device status (through its
//! [`SourceContext`](super::SourceContext)).

pub mod decoder;
mod describe;
pub mod framing;
mod kind;
mod session;

pub(crate) use kind::KIND;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::Deserialize;
use tracing::{Instrument, info_span};

use super::{Source, SourceContext, SourceFuture};
use crate::config::ReconnectConfig;
use crate::config::{ByteSize, Report, TimeSpan};
use crate::script::Limits;
use decoder::{Decoder, SerialPoint};
use framing::{FrameMode, unescape};

/// `kind: serial`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    pub name: String,
    /// The device path, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    pub port: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default)]
    pub flow_control: FlowControl,
    /// How the byte stream is cut into frames; default `{ delimiter: "\n" }`.
    #[serde(default)]
    pub frame: FrameConfig,
    /// Longest frame kept; longer ones are discarded and counted.
    #[serde(default = "default_max_frame")]
    pub max_frame: ByteSize,
    /// `json`, or a Rhai script (relative to the config file) defining
    /// `fn decode(frame)`.
    #[serde(default = "default_decoder")]
    pub decoder: String,
    /// Limits of the decoder script.
    #[serde(default)]
    pub limits: Limits,
    pub request: Option<RequestConfig>,
    /// Units and types for decoded names.
    #[serde(default)]
    pub points: Vec<SerialPoint>,
    /// Drop decoded names that are not in `points`.
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// The decoder script resolved against the config file's folder (set
    /// when the config is loaded).
    #[serde(skip)]
    pub decoder_path: Option<PathBuf>,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_max_frame() -> ByteSize {
    ByteSize(4096)
}
fn default_decoder() -> String {
    "json".to_string()
}

pub use crate::southbound::line::Parity;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    #[default]
    None,
    Software,
    Hardware,
}

/// `frame:`: one of the three keys (none means `delimiter: "\n"`), or
/// `length` with `idle`: then a pause drops a partial frame (realigns).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameConfig {
    /// Escapes `\r \n \t \0 \\ \xHH` are understood also in single quotes.
    pub delimiter: Option<String>,
    pub length: Option<usize>,
    pub idle: Option<TimeSpan>,
}

impl FrameConfig {
    /// The framer mode and, in idle mode, the pause that ends a frame.
    pub fn mode(&self) -> Result<(FrameMode, Option<std::time::Duration>), String> {
        match (&self.delimiter, self.length, self.idle) {
            (None, None, None) => Ok((FrameMode::Delimiter(b"\n".to_vec()), None)),
            (Some(d), None, None) => {
                let d = unescape(d)?;
                if d.is_empty() {
                    return Err("the delimiter is empty".into());
                }
                Ok((FrameMode::Delimiter(d), None))
            }
            (None, Some(0), None) => Err("length must be greater than 0".into()),
            (None, Some(n), None) => Ok((FrameMode::Length(n), None)),
            (None, Some(_), Some(t)) if t.get().is_zero() => {
                Err("idle must be greater than 0".into())
            }
            // A pause drops a partial frame: fixed-length frames realign.
            (None, Some(n), Some(t)) => Ok((FrameMode::Length(n), Some(t.get()))),
            (None, None, Some(t)) if t.get().is_zero() => Err("idle must be greater than 0".into()),
            (None, None, Some(t)) => Ok((FrameMode::Idle, Some(t.get()))),
            _ => {
                Err("give one of `delimiter`, `length` or `idle` (or `length` with `idle`)".into())
            }
        }
    }
}

/// `request:`: bytes written to the port at a fixed interval, for sensors
/// that answer only when asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Escapes as in `frame.delimiter`.
    pub data: String,
    pub every: TimeSpan,
}

impl SerialConfig {
    /// Resolves the decoder script against the config file's folder.
    pub(crate) fn resolve_paths(&mut self, config_dir: &Path) {
        if self.decoder != "json" {
            let p = Path::new(&self.decoder);
            self.decoder_path = Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                config_dir.join(p)
            });
        }
    }

    fn script_path(&self, config_file: &Path) -> Option<PathBuf> {
        if self.decoder == "json" {
            return None;
        }
        Some(
            self.decoder_path.clone().unwrap_or_else(|| {
                crate::config::resolve_path(config_file, Path::new(&self.decoder))
            }),
        )
    }

    /// Builds the decoder this device uses.
    pub fn build_decoder(&self) -> Result<Decoder, crate::script::ScriptError> {
        match &self.decoder_path {
            Some(p) if self.decoder != "json" => {
                Decoder::script(p, &self.limits, &self.points, self.strict)
            }
            _ => Ok(Decoder::json(&self.points, self.strict)),
        }
    }

    pub(crate) fn validate(&self, config_file: &Path, path: &str, report: &mut Report) {
        if self.baud == 0 {
            report.add(format!("{path}.baud"), "must be greater than 0");
        }
        if !(5..=8).contains(&self.data_bits) {
            report.add(format!("{path}.data_bits"), "must be 5, 6, 7 or 8");
        }
        if !(1..=2).contains(&self.stop_bits) {
            report.add(format!("{path}.stop_bits"), "must be 1 or 2");
        }
        if self.max_frame.0 == 0 {
            report.add(format!("{path}.max_frame"), "must be greater than 0");
        }
        match self.frame.mode() {
            Err(e) => report.add(format!("{path}.frame"), e),
            Ok((FrameMode::Length(n), _)) if n as u64 > self.max_frame.0 => report.add(
                format!("{path}.frame.length"),
                format!("{n} is more than max_frame ({})", self.max_frame),
            ),
            Ok(_) => {}
        }
        if let Some(r) = &self.request {
            if let Err(e) = unescape(&r.data) {
                report.add(format!("{path}.request.data"), e);
            }
            if r.every.get().is_zero() {
                report.add(format!("{path}.request.every"), "must be greater than 0");
            }
        }
        if self.reconnect.min.get().is_zero() || self.reconnect.min > self.reconnect.max {
            report.add(
                format!("{path}.reconnect"),
                "min must be greater than 0 and at most max",
            );
        }
        crate::config::check_point_names(path, self.points.iter().map(|p| p.name.as_str()), report);
        if self.strict && self.points.is_empty() {
            report.add(
                format!("{path}.strict"),
                "strict drops names not in `points`, but `points` is empty",
            );
        }
        self.limits.validate(&format!("{path}.limits"), report);
        if let Some(script) = self.script_path(config_file) {
            let res = Decoder::script(&script, &self.limits, &self.points, self.strict);
            if let Err(e) = res {
                report.add(format!("{path}.decoder"), e.to_string());
            }
        }
    }
}

/// Counters of one serial device (the metrics endpoint reads them).
#[derive(Debug, Default)]
pub struct SerialStats {
    /// Frames cut from the stream.
    pub frames: AtomicU64,
    /// Frames over `max_frame`, discarded.
    pub oversized_frames: AtomicU64,
    /// Bytes discarded with oversized frames.
    pub discarded_bytes: AtomicU64,
    /// Frames the decoder failed on (script error, bad JSON, wrong shape).
    pub decode_errors: AtomicU64,
    /// Readings sent to the rules stage.
    pub readings: AtomicU64,
    /// Times the port was opened.
    pub opens: AtomicU64,
    /// Failed attempts to open the port.
    pub open_failures: AtomicU64,
}

impl SerialStats {
    #[cfg(test)]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A running serial device.
pub struct Serial {
    cfg: SerialConfig,
    stats: Arc<SerialStats>,
}

impl Serial {
    pub fn new(cfg: SerialConfig) -> Self {
        Serial {
            cfg,
            stats: Arc::default(),
        }
    }
}

impl Source for Serial {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let span = info_span!("device", device = %self.cfg.name, port = %self.cfg.port.display());
        Box::pin(session::run(self.cfg, self.stats, ctx).instrument(span))
    }
}

#[cfg(test)]
mod tests {
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
        let unknown = "gateway: { id: gw }\ndevices:\n  - { name: s, kind: serial, port: /dev/x, bauds: 9600 }\n";
        let text = crate::settings::parse(unknown, Path::new("t.yaml"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("bauds"), "{text}");
    }
}
