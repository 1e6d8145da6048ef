//! One scenario run: `pubs` publishers send `per_pub` messages each on one
//! topic to `subs` subscribers; deliveries are counted (and timed) at the
//! subscribers.
//!
//! Payloads are single lines of `PAYLOAD` bytes. Before the measured part,
//! every publisher sends warm-up messages (`W <publisher>`) every 50 ms
//! until each subscriber has received one from each publisher: then all
//! clients are connected and subscribed. Data messages are
//! `D <send time, ns since the epoch, 19 digits> <publisher> xxx…`.
//!
//! Every wait is bounded: a subscriber gives up 3 s after its last message
//! (or at a hard deadline), so a broker that loses messages only shows as
//! `delivered < expected`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::QoS;
use tokio::time::Instant;

use super::clients::{Kind, Pub, Sub, now_ns};

pub const PAYLOAD: usize = 100;
const WARMUP_EVERY: Duration = Duration::from_millis(50);
const WARMUP_MAX: Duration = Duration::from_secs(15);
const IDLE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub pubs: usize,
    pub subs: usize,
    pub per_pub: usize,
    pub qos: QoS,
    /// Total publish rate in messages/s (spread over the publishers);
    /// None: as fast as the publishers go.
    pub rate: Option<f64>,
    /// The subscribers share one subscription (`$share/bench/...`): each
    /// message is delivered once among them.
    pub shared: bool,
}

/// Deliveries, measured span and latencies (µs, sorted) of one run.
pub struct Run {
    pub delivered: usize,
    pub expected: usize,
    pub elapsed_s: f64,
    pub lat_us: Vec<u64>,
}

impl Run {
    pub fn lost(&self) -> usize {
        self.expected.saturating_sub(self.delivered)
    }
    /// Delivered messages per second (first publish to last delivery).
    pub fn rate(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.delivered as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
    /// Latency percentile in ms (NaN without samples).
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
}

fn data_payload(publisher: usize) -> Vec<u8> {
    let mut p = format!("D {:019} {publisher:02} ", now_ns()).into_bytes();
    p.resize(PAYLOAD, b'x');
    p
}

struct SubResult {
    delivered: usize,
    lat_us: Vec<u64>,
    last_ns: u64,
}

async fn subscriber(mut sub: Sub, pubs: usize, want: usize, ready: Arc<AtomicUsize>) -> SubResult {
    let spawned = Instant::now();
    let hard = spawned + WARMUP_MAX + Duration::from_secs(30 + (want / 2000) as u64);
    let mut warm = vec![false; pubs];
    let mut warmed = 0;
    let mut r = SubResult {
        delivered: 0,
        lat_us: Vec::with_capacity(want),
        last_ns: 0,
    };
    while r.delivered < want {
        let until = if warmed < pubs {
            spawned + WARMUP_MAX
        } else {
            (Instant::now() + IDLE).min(hard)
        };
        let Ok(Some((payload, at))) = tokio::time::timeout_at(until, sub.next()).await else {
            break;
        };
        let text = std::str::from_utf8(&payload).unwrap_or("");
        let mut fields = text.split(' ');
        match (fields.next(), fields.next()) {
            (Some("W"), Some(p)) => {
                if let Ok(p) = p.parse::<usize>()
                    && p < pubs
                    && !warm[p]
                {
                    warm[p] = true;
                    warmed += 1;
                    if warmed == pubs {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            (Some("D"), Some(sent)) => {
                let sent = sent.parse::<u64>().unwrap_or(at);
                r.delivered += 1;
                r.lat_us.push(at.saturating_sub(sent) / 1000);
                r.last_ns = r.last_ns.max(at);
            }
            _ => {}
        }
    }
    r
}

async fn publisher(mut p: Pub, idx: usize, n: usize, pace: Option<(Instant, Duration)>) -> Pub {
    // bounded even when the broker stops reading (a full pipe or channel)
    let hard = Instant::now() + Duration::from_secs(60 + (n / 2000) as u64);
    for i in 0..n {
        if let Some((start, period)) = pace {
            tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        }
        let sent = tokio::time::timeout_at(hard, p.send(data_payload(idx), pace.is_some()));
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("publisher {idx}: {e}");
                break;
            }
            Err(_) => {
                eprintln!("publisher {idx}: stuck after {i} of {n} messages");
                break;
            }
        }
    }
    let _ = tokio::time::timeout_at(hard, p.flush()).await;
    p
}

pub async fn run(kind: Kind, port: u16, tag: &str, s: Spec) -> Run {
    let topic = format!("bench/{tag}");
    let want = s.pubs * s.per_pub;
    let filter = match s.shared {
        true => format!("$share/bench/{topic}"),
        false => topic.clone(),
    };
    let ready = Arc::new(AtomicUsize::new(0));
    let mut sub_tasks = Vec::new();
    for i in 0..s.subs {
        let sub = Sub::connect(kind, port, &format!("s{tag}-{i}"), &filter, s.qos).await;
        sub_tasks.push(tokio::spawn(subscriber(sub, s.pubs, want, ready.clone())));
    }
    let mut pubs: Vec<Pub> = (0..s.pubs)
        .map(|i| Pub::connect(kind, port, &format!("p{tag}-{i}"), &topic, s.qos))
        .collect();

    let warm_until = Instant::now() + WARMUP_MAX;
    while ready.load(Ordering::SeqCst) < s.subs && Instant::now() < warm_until {
        for (i, p) in pubs.iter_mut().enumerate() {
            if let Err(e) = p.send(format!("W {i:02}").into_bytes(), true).await {
                eprintln!("warm-up publish: {e}");
            }
        }
        tokio::time::sleep(WARMUP_EVERY).await;
    }
    if ready.load(Ordering::SeqCst) < s.subs {
        eprintln!("{tag}: not every subscriber got the warm-up; measuring anyway");
    }

    let t0 = now_ns();
    let start = Instant::now();
    let mut pub_tasks = Vec::new();
    for (i, p) in pubs.into_iter().enumerate() {
        let pace = s.rate.map(|rate| {
            let period = Duration::from_secs_f64(s.pubs as f64 / rate);
            // stagger the publishers evenly within one period
            (start + period.mul_f64(i as f64 / s.pubs as f64), period)
        });
        pub_tasks.push(tokio::spawn(publisher(p, i, s.per_pub, pace)));
    }
    let mut finished = Vec::new();
    for t in pub_tasks {
        finished.push(t.await.expect("publisher task"));
    }
    let mut delivered = 0;
    let mut lat_us = Vec::new();
    let mut last = t0;
    for t in sub_tasks {
        let r = t.await.expect("subscriber task");
        delivered += r.delivered;
        lat_us.extend(r.lat_us);
        last = last.max(r.last_ns);
    }
    for p in finished {
        p.finish().await;
    }
    lat_us.sort_unstable();
    Run {
        delivered,
        expected: if s.shared { want } else { want * s.subs },
        elapsed_s: (last - t0) as f64 / 1e9,
        lat_us,
    }
}
