//! The sandboxed Rhai engine, shared by the rules stage (`fn on_reading(r)`)
//! and serial decoders (`fn decode(frame)`): build an engine with limits,
//! compile a file, call one of its functions, and turn Rhai errors into
//! [`ScriptError`]s that name `file:line:column`.
//!
//! Owns the sandbox ([`Limits`], no modules, no `eval`, no file or network
//! access: Rhai has none unless a host registers it, and `import` is switched
//! off), `print`/`debug` going to the log, and the generic helpers every
//! script gets (`now()`, `parse_json`, `to_json`; see [`convert`]). It must not
//! know what a rule or a decoder is: callers register their own API on the
//! engine [`engine`] returns.

pub mod convert;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, FuncArgs, Position, Scope};
use serde::Deserialize;

use crate::config::{ByteSize, Report};

/// `limits:` of a script section: how much one call may do before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Rhai operations per call (a loop iteration, an expression, a function
    /// call each count). A runaway loop stops here.
    pub max_operations: u64,
    /// Nesting of function calls (recursion depth).
    pub max_call_levels: usize,
    /// Nesting of expressions, at compile time.
    pub max_expr_depth: usize,
    /// Largest string a script may build.
    pub max_string_size: ByteSize,
    /// Most elements in one array (and bytes in one blob).
    pub max_array_size: usize,
    /// Most properties in one object map.
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 100_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: ByteSize(64 * 1024),
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        let zero = [
            ("max_operations", self.max_operations == 0),
            ("max_call_levels", self.max_call_levels == 0),
            ("max_expr_depth", self.max_expr_depth == 0),
            ("max_string_size", self.max_string_size.0 == 0),
            ("max_array_size", self.max_array_size == 0),
            ("max_map_size", self.max_map_size == 0),
        ];
        for (key, is_zero) in zero {
            if is_zero {
                report.add(
                    format!("{path}.{key}"),
                    "must be greater than 0 (0 would mean unlimited in Rhai)",
                );
            }
        }
    }
}

/// Builds a sandboxed engine: limits set, `import` and `eval` disabled,
/// strict variables (a typo is a compile error), `print`/`debug` to the log,
/// and the generic helpers of [`convert`] and `now()` registered.
pub fn engine(limits: &Limits) -> Engine {
    let mut e = Engine::new();
    e.set_module_resolver(DummyModuleResolver::new());
    e.set_max_modules(0);
    e.disable_symbol("eval");
    e.disable_symbol("import");
    e.set_max_operations(limits.max_operations);
    e.set_max_call_levels(limits.max_call_levels);
    e.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
    e.set_max_string_size(usize::try_from(limits.max_string_size.0).unwrap_or(usize::MAX));
    e.set_max_array_size(limits.max_array_size);
    e.set_max_map_size(limits.max_map_size);
    e.set_strict_variables(true);
    e.on_print(|text| tracing::info!(target: "fieldgate::script", "{text}"));
    e.on_debug(|text, source, pos| {
        tracing::debug!(
            target: "fieldgate::script",
            script = source.unwrap_or("?"),
            line = pos.line(),
            "{text}"
        )
    });
    e.register_fn("now", crate::reading::now_ms);
    convert::register(&mut e);
    e
}

/// Where in a script something happened: `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: Arc<str>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl At {
    fn new(file: &Arc<str>, pos: Position) -> At {
        At {
            file: file.clone(),
            line: pos.line(),
            column: pos.position(),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

/// Why a script could not be loaded or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read script {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Compile { at: At, message: String },
    #[error("{at}: the script defines no `fn {name}` with {arity} parameter(s)")]
    MissingFn {
        at: At,
        name: &'static str,
        arity: usize,
    },
    /// After a call, the script's state (`this`) was over the limits; the
    /// caller should reset it.
    #[error(
        "{at}: in fn {function}: the script's state (`this`) grew too large ({entries} entries, {text} bytes of text; limits max_map_size, max_string_size)"
    )]
    StateTooLarge {
        at: At,
        function: String,
        entries: usize,
        text: usize,
    },
    /// A call failed; `limit` tells a sandbox limit (operations, call depth,
    /// sizes) from an ordinary script error.
    #[error("{at}: {message}")]
    Runtime {
        at: At,
        message: String,
        limit: bool,
    },
}

impl ScriptError {
    /// Whether a sandbox limit stopped the call.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            ScriptError::Runtime { limit: true, .. } | ScriptError::StateTooLarge { .. }
        )
    }

    /// The script position, when there is one.
    pub fn at(&self) -> Option<&At> {
        match self {
            ScriptError::Read { .. } => None,
            ScriptError::Compile { at, .. }
            | ScriptError::MissingFn { at, .. }
            | ScriptError::StateTooLarge { at, .. }
            | ScriptError::Runtime { at, .. } => Some(at),
        }
    }
}

/// A compiled script file.
#[derive(Clone)]
pub struct Script {
    /// The file as configured (resolved), shown in messages.
    pub name: Arc<str>,
    pub path: PathBuf,
    ast: AST,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script").field("path", &self.path).finish()
    }
}

impl Script {
    /// Reads and compiles `path`; `name` is how messages show the file.
    pub fn compile_file(engine: &Engine, path: &Path, name: &str) -> Result<Script, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut s = Self::compile_str(engine, name, &text)?;
        s.path = path.to_path_buf();
        Ok(s)
    }

    /// Compiles script text; `name` stands for the file in messages.
    pub fn compile_str(engine: &Engine, name: &str, text: &str) -> Result<Script, ScriptError> {
        let name: Arc<str> = name.into();
        let mut ast = engine.compile(text).map_err(|e| ScriptError::Compile {
            at: At::new(&name, e.position()),
            message: e.err_type().to_string(),
        })?;
        ast.set_source(name.as_ref());
        Ok(Script {
            path: PathBuf::from(name.as_ref()),
            name,
            ast,
        })
    }

    /// Fails unless the script defines `fn name(..)` with `arity` parameters.
    pub fn require_fn(&self, name: &'static str, arity: usize) -> Result<(), ScriptError> {
        if self
            .ast
            .iter_functions()
            .any(|f| f.name == name && f.params.len() == arity)
        {
            Ok(())
        } else {
            Err(ScriptError::MissingFn {
                at: At::new(&self.name, Position::NONE),
                name,
                arity,
            })
        }
    }

    /// Calls `fn name(args)` with `this` bound to `state`, within the
    /// engine's limits. The script's top-level statements (if any) run
    /// before each call, so that `const NAME = ...;` declared there is
    /// reachable in functions as `global::NAME`; keep the top level to
    /// constants.
    ///
    /// After the call, `state` must stay within the limits: at most
    /// `max_map_size` entries (map entries and array elements, nested ones
    /// counted) and [`STATE_TEXT_FACTOR`] × `max_string_size` bytes of text.
    /// Rhai does not check `m[key] = v`, so a script could otherwise grow its
    /// state without bound; a state over the limits is an error (a limit
    /// error) and the caller should reset it.
    pub fn call(
        &self,
        engine: &Engine,
        state: &mut Dynamic,
        name: &str,
        args: impl FuncArgs,
    ) -> Result<Dynamic, ScriptError> {
        let opts = CallFnOptions::new()
            .eval_ast(true)
            .rewind_scope(true)
            .bind_this_ptr(state);
        let out = engine
            .call_fn_with_options::<Dynamic>(opts, &mut Scope::new(), &self.ast, name, args)
            .map_err(|e| self.runtime_error(&e, name))?;
        let (entries, text) = state_size(state);
        let max_text = engine.max_string_size().saturating_mul(STATE_TEXT_FACTOR);
        if entries > engine.max_map_size() || (max_text > 0 && text > max_text) {
            return Err(ScriptError::StateTooLarge {
                at: At::new(&self.name, Position::NONE),
                function: name.to_string(),
                entries,
                text,
            });
        }
        Ok(out)
    }

    fn runtime_error(&self, err: &EvalAltResult, name: &str) -> ScriptError {
        // Report where the failure really is (inside nested calls), but keep
        // the call chain in the message.
        let inner = err.unwrap_inner();
        let mut pos = inner.position();
        if pos.is_none() {
            pos = err.position();
        }
        let limit = matches!(
            inner,
            EvalAltResult::ErrorTooManyOperations(..)
                | EvalAltResult::ErrorStackOverflow(..)
                | EvalAltResult::ErrorDataTooLarge(..)
                | EvalAltResult::ErrorTooManyVariables(..)
                | EvalAltResult::ErrorTooManyModules(..)
        );
        let mut message = describe(inner);
        if pos.is_none() {
            // No line (Rhai gives none for the operation limit): name the function.
            message = format!("in fn {name}: {message}");
        }
        let mut chain = Vec::new();
        let mut e = err;
        while let EvalAltResult::ErrorInFunctionCall(f, _, next, _) = e {
            chain.push(f.as_str());
            e = next;
        }
        if chain.len() > 1 {
            message.push_str(&format!(" (in {})", chain.join(" -> ")));
        }
        ScriptError::Runtime {
            at: At::new(&self.name, pos),
            message,
            limit,
        }
    }
}

/// How many times `max_string_size` the text held in a script's state may be.
pub const STATE_TEXT_FACTOR: usize = 16;

/// Entries (map entries, array and blob elements, nested ones counted) and
/// bytes of text in a value.
pub fn state_size(v: &Dynamic) -> (usize, usize) {
    if let Some(m) = v.read_lock::<rhai::Map>() {
        m.values().fold((m.len(), 0), |(n, t), v| {
            let (n2, t2) = state_size(v);
            (n + n2, t + t2)
        })
    } else if let Some(a) = v.read_lock::<rhai::Array>() {
        a.iter().fold((a.len(), 0), |(n, t), v| {
            let (n2, t2) = state_size(v);
            (n + n2, t + t2)
        })
    } else if let Some(b) = v.read_lock::<rhai::Blob>() {
        (b.len(), 0)
    } else if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        (0, s.len())
    } else {
        (0, 0)
    }
}

/// An error's text without the ` (line 3, position 7)` Rhai appends.
fn describe(err: &EvalAltResult) -> String {
    let text = match err {
        EvalAltResult::ErrorTooManyOperations(..) => {
            "too many operations: the script was stopped (limits.max_operations)".to_string()
        }
        EvalAltResult::ErrorStackOverflow(..) => {
            "too many nested calls: the script was stopped (limits.max_call_levels)".to_string()
        }
        EvalAltResult::ErrorRuntime(v, _) => format!("thrown: {v}"),
        other => other.to_string(),
    };
    match text.rfind(" (line ") {
        Some(cut) if text.ends_with(')') => text[..cut].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
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
        let import =
            Script::compile_str(&e, "i.rhai", "import \"/etc/passwd\" as p;\nfn f(x) { x }");
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
        let s = Script::compile_str(&e, "s.rhai", "fn f(x) {\n  this[`k${x}`] = x;\n}")
            .expect("compiles");
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
}
