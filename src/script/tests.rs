//! Tests of the sandbox: limits, positions, disabled features, helpers.

use super::*;
use rhai::ImmutableString;

fn compile(text: &str) -> (Engine, Script) {
    let e = engine(&Limits::default());
    let s = Script::compile_str(&e, "t.rhai", text).expect("compiles");
    (e, s)
}

fn call(text: &str, f: &str, arg: Dynamic) -> Result<Dynamic, ScriptError> {
    let (e, s) = compile(text);
    let mut this = Dynamic::from_map(Default::default());
    s.call(&e, &mut this, f, (arg,))
}

#[test]
fn runaway_loop_is_stopped_by_the_operation_limit() {
    let err = call(
        "fn f(x) {\n  loop { x += 1; }\n}",
        "f",
        Dynamic::from_int(0),
    )
    .unwrap_err();
    assert!(err.is_limit(), "{err}");
    // Rhai gives no line for this one: the message names the file and function.
    assert!(err.to_string().starts_with("t.rhai"), "{err}");
    assert!(err.to_string().contains("too many operations"), "{err}");
    assert!(err.to_string().contains("fn f"), "{err}");
}

#[test]
fn runtime_error_names_file_line_and_column() {
    let err = call(
        "fn f(x) {\n  let y = 1;\n  let z = x / 0;\n  z\n}",
        "f",
        Dynamic::from_int(3),
    )
    .unwrap_err();
    assert!(!err.is_limit());
    let at = err.at().expect("position");
    assert_eq!((at.line, &*at.file), (Some(3), "t.rhai"), "{err}");
    assert!(err.to_string().starts_with("t.rhai:3:"), "{err}");
    assert!(err.to_string().contains("Division by zero"), "{err}");
}

#[test]
fn error_inside_a_nested_function_points_at_the_nested_line() {
    let err = call(
        "fn g(x) {\n  x.no_such_method()\n}\nfn f(x) {\n  g(x)\n}",
        "f",
        Dynamic::from_int(3),
    )
    .unwrap_err();
    assert_eq!(err.at().and_then(|a| a.line), Some(2), "{err}");
    assert!(err.to_string().contains("no_such_method"), "{err}");
}

#[test]
fn thrown_value_is_reported() {
    let err = call("fn f(x) {\n\n  throw \"bad input\";\n}", "f", Dynamic::UNIT).unwrap_err();
    assert!(err.to_string().starts_with("t.rhai:3:"), "{err}");
    assert!(err.to_string().contains("bad input"), "{err}");
}

#[test]
fn compile_error_names_file_line_and_column() {
    let e = engine(&Limits::default());
    let err = Script::compile_str(&e, "bad.rhai", "fn f(x) {\n  let y = ;\n}").unwrap_err();
    assert!(matches!(err, ScriptError::Compile { .. }), "{err:?}");
    assert!(err.to_string().starts_with("bad.rhai:2:"), "{err}");
}

#[test]
fn undeclared_variables_are_compile_errors() {
    let e = engine(&Limits::default());
    let err = Script::compile_str(&e, "s.rhai", "fn f(x) {\n  x + typo\n}").unwrap_err();
    assert!(err.to_string().contains("typo"), "{err}");
    assert!(err.to_string().starts_with("s.rhai:2:"), "{err}");
}

#[test]
fn eval_and_import_are_not_available() {
    let e = engine(&Limits::default());
    let eval = Script::compile_str(&e, "e.rhai", "fn f(x) { eval(\"40 + 2\") }");
    let eval_ran = eval.map(|s| s.call(&e, &mut Dynamic::from(()), "f", (1_i64,)));
    assert!(!matches!(eval_ran, Ok(Ok(_))), "eval must not run");
    let import = Script::compile_str(&e, "i.rhai", "import \"/etc/passwd\" as p;\nfn f(x) { x }");
    assert!(import.is_err(), "import must be refused: {import:?}");
}

#[test]
fn recursion_is_stopped_by_the_call_depth_limit() {
    let err = call("fn f(x) {\n  f(x + 1)\n}", "f", Dynamic::from_int(0)).unwrap_err();
    assert!(err.is_limit(), "{err}");
}

#[test]
fn size_limits_apply_to_strings_arrays_and_maps() {
    let limits = Limits {
        max_string_size: ByteSize(100),
        max_array_size: 10,
        max_map_size: 10,
        ..Limits::default()
    };
    let e = engine(&limits);
    let cases = [
        "fn f(x) { let s = \"\"; for i in 0..200 { s += \"x\"; } s }",
        "fn f(x) { let a = []; for i in 0..20 { a.push(i); } a }",
        "fn f(x) { let m = #{}; for i in 0..20 { let n = #{}; n[`k${i}`] = i; m = m + n; } m }",
    ];
    for text in cases {
        let s = Script::compile_str(&e, "l.rhai", text).expect("compiles");
        let err = s
            .call(&e, &mut Dynamic::from(()), "f", (0_i64,))
            .unwrap_err();
        assert!(err.is_limit(), "{text}: {err}");
    }
}

#[test]
fn state_that_outgrows_the_limits_is_an_error() {
    let limits = Limits {
        max_map_size: 50,
        ..Limits::default()
    };
    let e = engine(&limits);
    // Rhai does not check sizes on `m[key] = v`; `Script::call` checks `this`.
    let s =
        Script::compile_str(&e, "s.rhai", "fn f(x) {\n  this[`k${x}`] = x;\n}").expect("compiles");
    let mut this = Dynamic::from_map(Default::default());
    let mut failed = None;
    for i in 0..100_i64 {
        if let Err(e) = s.call(&e, &mut this, "f", (i,)) {
            failed = Some((i, e));
            break;
        }
    }
    let (i, err) = failed.expect("the state limit must stop the script");
    assert_eq!(i, 50, "{err}");
    assert!(err.is_limit(), "{err}");
    assert!(err.to_string().contains("state"), "{err}");
}

#[test]
fn this_keeps_state_between_calls() {
    let (e, s) = compile("fn f(x) {\n  this.n = (this.n ?? 0) + x;\n  this.n\n}");
    let mut this = Dynamic::from_map(Default::default());
    for _ in 0..3 {
        let _ = s.call(&e, &mut this, "f", (2_i64,)).expect("call");
    }
    let out = s.call(&e, &mut this, "f", (2_i64,)).expect("call");
    assert_eq!(out.as_int(), Ok(8));
}

#[test]
fn top_level_constants_are_reached_through_global() {
    let out = call(
        "const LIMIT = 40;\nfn f(x) { x > global::LIMIT }",
        "f",
        Dynamic::from_int(50),
    )
    .expect("call");
    assert_eq!(out.as_bool(), Ok(true));
}

#[test]
fn json_helpers_round_trip() {
    let out = call(
        "fn f(x) { let v = parse_json(x); v.b[1] += 1; to_json(v) }",
        "f",
        Dynamic::from(ImmutableString::from(r#"{"a":"s","b":[1,2.5,null,true]}"#)),
    )
    .expect("call");
    // Rhai maps keep keys sorted: so does their JSON
    assert_eq!(out.to_string(), r#"{"a":"s","b":[1,3.5,null,true]}"#);
    let bad = call(
        "fn f(x) {\n parse_json(x) }",
        "f",
        Dynamic::from(ImmutableString::from("{")),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("invalid JSON"), "{bad}");
}

#[test]
fn now_is_milliseconds_since_the_epoch() {
    let before = crate::reading::now_ms();
    let out = call("fn f(x) { now() }", "f", Dynamic::UNIT).expect("call");
    let v = out.as_int().expect("int");
    assert!(v >= before && v <= crate::reading::now_ms(), "{v}");
}

#[test]
fn require_fn_checks_name_and_arity() {
    let (_, s) = compile("fn on_reading(r) { }");
    assert!(s.require_fn("on_reading", 1).is_ok());
    let err = s.require_fn("decode", 1).unwrap_err();
    assert!(err.to_string().contains("fn decode"), "{err}");
}

#[test]
fn payloads_from_script_values() {
    use super::convert::to_payload;
    let mut m = rhai::Map::new();
    m.insert("a".into(), Dynamic::from_float(1.5));
    assert_eq!(&to_payload(&Dynamic::from_map(m))[..], br#"{"a":1.5}"#);
    assert_eq!(
        &to_payload(&Dynamic::from(ImmutableString::from("on")))[..],
        b"on"
    );
    let blob: rhai::Blob = vec![0, 255];
    assert_eq!(&to_payload(&Dynamic::from_blob(blob))[..], &[0u8, 255]);
    assert_eq!(&to_payload(&Dynamic::from_int(7))[..], b"7");
}
