//! The Rhai API of rule scripts: the `Reading` type scripts get in
//! `on_reading(r)`, and the functions `emit`, `publish`, `deadband`,
//! `rate_limit`, `last` and `last_reading`.
//!
//! Owns what a script can see and do during one call. The functions write
//! into [`CallCtx`] (publishes of the current call, helper state of the
//! running script, last values); the engine (`engine.rs`) sets it up around
//! each call. Must not run scripts itself nor touch channels.

use std::sync::{Arc, Mutex, MutexGuard};

use rhai::{Dynamic, Engine, EvalAltResult, INT, ImmutableString, Position};

use super::TopicTemplate;
use super::script_reading::ScriptReading;
use super::state::{HelperState, LastValues};
use crate::reading::{Publish, Qos};
use crate::script::convert;

/// What `emit(r)` and `publish(topic, payload)` use when the script does not say.
pub(crate) struct Defaults {
    pub gateway: String,
    pub topic: TopicTemplate,
    pub qos: Qos,
    pub retain: bool,
}

impl Defaults {
    fn topic(&self, device: &str, point: &str) -> String {
        self.topic.render(&self.gateway, device, point)
    }
}

/// What native functions share with the engine during a call.
#[derive(Default)]
pub(crate) struct CallCtx {
    /// Publishes of the current call, in order.
    pub out: Vec<Publish>,
    /// Index of the script being called.
    pub script: usize,
    /// Per script: what `deadband` and `rate_limit` remember.
    pub helpers: Vec<HelperState>,
    /// The last reading of every point, shared by all scripts.
    pub last: LastValues,
}

pub(crate) type SharedCtx = Arc<Mutex<CallCtx>>;

pub(crate) fn lock(ctx: &SharedCtx) -> MutexGuard<'_, CallCtx> {
    // A panic in a native function cannot leave CallCtx half-updated in a
    // way that matters: keep going with what is there.
    ctx.lock().unwrap_or_else(|p| p.into_inner())
}

type Res<T> = Result<T, Box<EvalAltResult>>;

fn fail<T>(msg: impl Into<String>) -> Res<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        Position::NONE,
    )))
}

/// A topic a script may publish on: not empty, no wildcards, no NUL, at most 65,535 bytes.
fn check_topic(topic: &str) -> Res<()> {
    if topic.is_empty() {
        fail("the topic is empty")
    } else if topic.contains(['+', '#', '\0']) {
        fail(format!(
            "cannot publish on {topic:?}: `+`, `#` and NUL are not allowed"
        ))
    } else if topic.len() > 65_535 {
        fail("the topic is longer than 65,535 bytes")
    } else {
        Ok(())
    }
}

fn qos_of(v: INT) -> Res<Qos> {
    u8::try_from(v)
        .ok()
        .and_then(Qos::from_u8)
        .map_or_else(|| fail(format!("qos must be 0, 1 or 2, not {v}")), Ok)
}

/// Milliseconds from a duration argument: an integer (ms) or a string like `"5s"`.
fn millis(v: &Dynamic, what: &str) -> Res<i64> {
    if let Ok(ms) = v.as_int() {
        return if ms >= 0 {
            Ok(ms)
        } else {
            fail(format!("{what} must not be negative"))
        };
    }
    if let Some(s) = v.read_lock::<ImmutableString>() {
        return match humantime::parse_duration(s.trim()) {
            Ok(d) => Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => fail(format!("{what} {s:?}: {e}")),
        };
    }
    fail(format!(
        "{what} must be milliseconds or a string like \"5s\", not {}",
        v.type_name()
    ))
}

fn number(v: &Dynamic, what: &str) -> Res<f64> {
    match (v.as_float(), v.as_int()) {
        (Ok(f), _) => Ok(f),
        #[allow(clippy::cast_precision_loss)] // a deadband is not that precise
        (_, Ok(i)) => Ok(i as f64),
        _ => fail(format!("{what} must be a number, not {}", v.type_name())),
    }
}

/// Registers the type and the functions on `engine`.
pub(crate) fn register(engine: &mut Engine, defaults: Arc<Defaults>, ctx: SharedCtx) {
    register_reading(engine, defaults.clone());
    register_publishing(engine, defaults, ctx.clone());
    register_helpers(engine, ctx.clone());
    register_last(engine, ctx);
}

/// The `Reading` type: its fields, their checks, its text form, and the
/// `topic` it is emitted on (the default mapping's unless set).
fn register_reading(engine: &mut Engine, defaults: Arc<Defaults>) {
    engine
        .register_type_with_name::<ScriptReading>("Reading")
        .register_get_set(
            "device",
            |r: &mut ScriptReading| r.device.clone(),
            |r: &mut ScriptReading, v: ImmutableString| r.device = v,
        )
        .register_get_set(
            "point",
            |r: &mut ScriptReading| r.point.clone(),
            |r: &mut ScriptReading, v: ImmutableString| r.point = v,
        )
        .register_get_set(
            "value",
            |r: &mut ScriptReading| r.value.clone(),
            |r: &mut ScriptReading, v: Dynamic| r.value = v,
        )
        .register_get_set(
            "ts",
            |r: &mut ScriptReading| r.ts,
            |r: &mut ScriptReading, v: INT| r.ts = v,
        )
        .register_get("quality", |r: &mut ScriptReading| r.quality.clone())
        .register_set("quality", set_quality)
        .register_get("unit", |r: &mut ScriptReading| r.unit.clone())
        .register_set("unit", set_unit)
        .register_set("topic", |r: &mut ScriptReading, v: ImmutableString| {
            r.topic = Some(v)
        })
        .register_fn("to_string", |r: &mut ScriptReading| r.to_string())
        .register_fn("to_debug", |r: &mut ScriptReading| r.to_string());
    engine.register_get("topic", move |r: &mut ScriptReading| -> ImmutableString {
        match &r.topic {
            Some(t) => t.clone(),
            None => defaults.topic(&r.device, &r.point).into(),
        }
    });
}

fn set_quality(r: &mut ScriptReading, v: ImmutableString) -> Res<()> {
    match v.as_str() {
        "good" | "bad" | "stale" => {
            r.quality = v;
            Ok(())
        }
        other => fail(format!(
            "quality must be \"good\", \"bad\" or \"stale\", not {other:?}"
        )),
    }
}

fn set_unit(r: &mut ScriptReading, v: Dynamic) -> Res<()> {
    if v.is_unit() || v.is_string() {
        r.unit = v;
        Ok(())
    } else {
        fail(format!(
            "unit must be a string or (), not {}",
            v.type_name()
        ))
    }
}

/// Adds a publish to the current call's output, once its topic is checked.
fn push(ctx: &SharedCtx, topic: String, payload: bytes::Bytes, qos: Qos, retain: bool) -> Res<()> {
    check_topic(&topic)?;
    lock(ctx).out.push(Publish {
        topic,
        payload,
        qos,
        retain,
    });
    Ok(())
}

/// `emit(r)`, `publish(topic, payload)` and `publish(topic, payload, qos, retain)`.
fn register_publishing(engine: &mut Engine, defaults: Arc<Defaults>, ctx: SharedCtx) {
    let (d, c) = (defaults.clone(), ctx.clone());
    engine.register_fn("emit", move |r: &mut ScriptReading| -> Res<()> {
        let topic = match &r.topic {
            Some(t) => t.to_string(),
            None => d.topic(&r.device, &r.point),
        };
        push(&c, topic, r.payload(), d.qos, d.retain)
    });
    let (d, c) = (defaults, ctx.clone());
    engine.register_fn("publish", move |topic: &str, payload: Dynamic| -> Res<()> {
        let payload = convert::to_payload(&payload);
        push(&c, topic.to_string(), payload, d.qos, d.retain)
    });
    engine.register_fn(
        "publish",
        move |topic: &str, payload: Dynamic, qos: INT, retain: bool| -> Res<()> {
            check_topic(topic)?; // a bad topic is reported before a bad qos
            let qos = qos_of(qos)?;
            let payload = convert::to_payload(&payload);
            push(&ctx, topic.to_string(), payload, qos, retain)
        },
    );
}

/// The helpers that remember between calls, per script: `deadband` and
/// `rate_limit`.
fn register_helpers(engine: &mut Engine, ctx: SharedCtx) {
    let c = ctx.clone();
    engine.register_fn(
        "deadband",
        move |r: &mut ScriptReading, delta: Dynamic| -> Res<bool> {
            let delta = number(&delta, "the deadband")?;
            let mut g = lock(&c);
            let i = g.script;
            Ok(g.helpers[i].deadband(r, delta, None))
        },
    );
    let c = ctx.clone();
    engine.register_fn(
        "deadband",
        move |r: &mut ScriptReading, delta: Dynamic, max_age: Dynamic| -> Res<bool> {
            let delta = number(&delta, "the deadband")?;
            let max_age = millis(&max_age, "max_age")?;
            let mut g = lock(&c);
            let i = g.script;
            Ok(g.helpers[i].deadband(r, delta, Some(max_age)))
        },
    );
    engine.register_fn(
        "rate_limit",
        move |r: &mut ScriptReading, period: Dynamic| -> Res<bool> {
            let period = millis(&period, "the period")?;
            let mut g = lock(&ctx);
            let i = g.script;
            Ok(g.helpers[i].rate_limit(r, period))
        },
    );
}

/// `last(device, point)` and `last_reading(device, point)`: the last
/// reading of any point, shared by all scripts.
fn register_last(engine: &mut Engine, ctx: SharedCtx) {
    let c = ctx.clone();
    engine.register_fn("last", move |device: &str, point: &str| -> Dynamic {
        lock(&c)
            .last
            .get(device, point)
            .map_or(Dynamic::UNIT, |r| convert::from_value(&r.value))
    });
    engine.register_fn(
        "last_reading",
        move |device: &str, point: &str| -> Dynamic {
            lock(&ctx)
                .last
                .get(device, point)
                .map_or(Dynamic::UNIT, |r| Dynamic::from(ScriptReading::new(r)))
        },
    );
}
