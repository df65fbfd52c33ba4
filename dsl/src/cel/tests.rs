use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::codes::Code;

fn eval_with(src: &str, vars: &HashMap<String, Value>) -> Result<Value, EvalError> {
    let expr = parse(src).unwrap_or_else(|d| panic!("parse `{src}`: {d:?}"));
    let program = Program::compile(&expr, &Functions::standard())
        .unwrap_or_else(|d| panic!("compile `{src}`: {d:?}"));
    program.eval(vars)
}

fn eval(src: &str) -> Result<Value, EvalError> {
    eval_with(src, &HashMap::new())
}

fn ok(src: &str) -> Value {
    eval(src).unwrap_or_else(|e| panic!("eval `{src}`: {e}"))
}

fn event() -> HashMap<String, Value> {
    let json = serde_json::json!({
        "type": "jira:issue_updated",
        "data": {"issue": {"key": "OPS-1", "fields": {"priority": {"name": "High"}}},
                 "items": [1, 2, 3], "x-y": true}
    });
    HashMap::from([("event".to_string(), Value::from_json(&json))])
}

#[test]
fn precedence() {
    assert_eq!(ok("1 + 2 * 3"), Value::Int(7));
    assert_eq!(ok("(1 + 2) * 3"), Value::Int(9));
    assert_eq!(ok("10 - 4 - 3"), Value::Int(3));
    assert_eq!(ok("2 < 3 == true"), Value::Bool(true));
    assert_eq!(ok("true || false && false"), Value::Bool(true));
    assert_eq!(ok("false ? 1 : true ? 2 : 3"), Value::Int(2));
    assert_eq!(ok("!!true"), Value::Bool(true));
    assert_eq!(ok("--5"), Value::Int(5));
    assert_eq!(ok("-9223372036854775808"), Value::Int(i64::MIN));
    assert_eq!(ok("1 in [1, 2] && 'a' in {'a': 1}"), Value::Bool(true));
    assert_eq!(ok("[1, 2,][1] + {'k': 3,}.k"), Value::Int(5));
}

#[test]
fn literals_and_escapes() {
    assert_eq!(
        ok(r#""a\tb\x41\101\u00e9\U0001F600""#),
        Value::string("a\tbAAé😀")
    );
    assert_eq!(ok(r"r'\n'"), Value::string("\\n"));
    assert_eq!(
        ok(r"b'\xff\000'"),
        Value::Bytes(Arc::from(&[0xffu8, 0][..]))
    );
    assert_eq!(ok("'''a\nb'''"), Value::string("a\nb"));
    assert_eq!(ok("0x1F"), Value::Int(31));
    assert_eq!(ok("7u"), Value::Uint(7));
    assert_eq!(ok("1.5e2"), Value::Double(150.0));
    let err = parse(r"'\q'").unwrap_err();
    assert_eq!(err[0].code, Code::InvalidLiteral);
    let err = parse("9223372036854775808").unwrap_err();
    assert_eq!(err[0].code, Code::InvalidLiteral);
}

#[test]
fn identifiers_do_not_split_keywords() {
    assert_eq!(
        eval_with(
            "inside + truex",
            &HashMap::from([
                ("inside".to_string(), Value::Int(1)),
                ("truex".to_string(), Value::Int(2))
            ])
        ),
        Ok(Value::Int(3))
    );
    assert!(parse("in").is_err());
    assert!(parse("1 in").is_err());
}

#[test]
fn errors_are_absorbed_by_logic() {
    assert_eq!(ok("1/0 == 1 || true"), Value::Bool(true));
    assert_eq!(ok("true || 1/0 == 1"), Value::Bool(true));
    assert_eq!(ok("1/0 == 1 && false"), Value::Bool(false));
    assert!(eval("1/0 == 1 && true").is_err());
    assert!(eval("'a' || false").is_err());
    assert_eq!(ok("[1, 0].exists(x, 1 / x == 1)"), Value::Bool(true));
    assert_eq!(ok("true ? 1 : 1 / 0"), Value::Int(1));
}

#[test]
fn arithmetic_errors() {
    assert_eq!(eval("1 / 0").unwrap_err().message, "division by zero");
    assert_eq!(
        eval("9223372036854775807 + 1").unwrap_err().message,
        "integer overflow"
    );
    assert!(eval("0u - 1u").is_err());
    assert!(eval("1 + 1u").is_err());
    assert_eq!(ok("1 == 1u && 1 < 1.5 && 2u > 1.5"), Value::Bool(true));
}

#[test]
fn deep_nesting_is_a_diagnostic() {
    for src in [
        format!("{}1{}", "(".repeat(5000), ")".repeat(5000)),
        format!("{}1{}", "[".repeat(150), "]".repeat(150)),
        format!("{}true", "!".repeat(5000)),
        format!("{}1", "-".repeat(5000)),
        vec!["1"; 3000].join(" + "),
        format!("x{}", ".y".repeat(3000)),
    ] {
        let err = parse(&src).unwrap_err();
        assert_eq!(err[0].code, Code::ExprSyntax, "{}", &src[..20]);
    }
    // Up to the limit is fine, on a test thread's small stack too.
    let src = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(
        parse(&src).map(|e| e.kind),
        Ok(ExprKind::Literal(Value::Int(1)))
    );
    let src = format!("{}1{}", "[".repeat(60), "]".repeat(60));
    assert!(eval(&src).is_ok());
}

#[test]
fn expression_stops_before_a_block() {
    use pest::Parser as _;
    let src = "a == b\n state x {";
    let mut pairs = crate::parser::StewardParser::parse(crate::parser::Rule::expr, src).unwrap();
    let pair = pairs.next().unwrap();
    assert_eq!(pair.as_str().trim_end(), "a == b");
    let expr = build(pair).unwrap();
    assert_eq!(expr.span, Span::new(0, 6));
    let src = "event.subject {";
    let mut pairs = crate::parser::StewardParser::parse(crate::parser::Rule::expr, src).unwrap();
    assert_eq!(pairs.next().unwrap().as_str().trim_end(), "event.subject");
}

#[test]
fn fields_and_references() {
    let vars = event();
    assert_eq!(
        eval_with("event.data.issue.fields.priority.name", &vars),
        Ok(Value::string("High"))
    );
    assert_eq!(eval_with("event.data['x-y']", &vars), Ok(Value::Bool(true)));
    assert_eq!(
        eval_with("has(event.data.issue)", &vars),
        Ok(Value::Bool(true))
    );
    assert_eq!(
        eval_with("has(event.data.nope)", &vars),
        Ok(Value::Bool(false))
    );
    assert_eq!(
        eval_with("event.data.nope", &vars).unwrap_err().message,
        "no such key `nope`"
    );
    let expr = parse(
        "event.data.issue.key == 'x' && has(event.data.y) && event.data['z'].w \
         && event.data.items.exists(i, i > other.n) && event.data[k].q",
    )
    .unwrap();
    let paths: Vec<String> = expr
        .references()
        .into_iter()
        .map(|r| r.path.join("."))
        .collect();
    assert_eq!(
        paths,
        [
            "event.data.issue.key",
            "event.data.y",
            "event.data.z.w",
            "event.data.items",
            "other.n",
            "event.data",
            "k"
        ]
    );
    let r = &expr.references()[0];
    assert_eq!(r.span, Span::new(0, 20));
}

#[test]
fn macros() {
    assert_eq!(ok("[1, 2, 3].all(x, x > 0)"), Value::Bool(true));
    assert_eq!(ok("[1, 2, 3].exists_one(x, x > 2)"), Value::Bool(true));
    assert_eq!(
        ok("[1, 2, 3].map(x, x * 2)"),
        Value::list(vec![Value::Int(2), Value::Int(4), Value::Int(6)])
    );
    assert_eq!(
        ok("[1, 2, 3].map(x, x > 1, x)"),
        Value::list(vec![Value::Int(2), Value::Int(3)])
    );
    assert_eq!(ok("[1, 2, 3].filter(x, x != 2).size()"), Value::Int(2));
    assert_eq!(ok("{'a': 1}.exists(k, k == 'a')"), Value::Bool(true));
    assert_eq!(ok("[[1], [2]].all(x, x.all(x, x > 0))"), Value::Bool(true));
    assert_eq!(ok("[5].exists(i, v, i == 0 && v == 5)"), Value::Bool(true));
}

#[test]
fn compile_diagnostics() {
    let f = Functions::standard();
    let d = Program::compile(&parse("nope(1)").unwrap(), &f).unwrap_err();
    assert_eq!(d[0].code, Code::UnknownFunction);
    assert_eq!(d[0].message, "unknown function `nope`");
    let d = Program::compile(&parse("size(1, 2)").unwrap(), &f).unwrap_err();
    assert_eq!(d[0].code, Code::WrongArity);
    let d = Program::compile(&parse("'a'.matches('(')").unwrap(), &f).unwrap_err();
    assert_eq!(d[0].code, Code::InvalidRegex);
    assert_eq!(d[0].span, Span::new(12, 15));
    let d = parse("1 +").unwrap_err();
    assert_eq!(d[0].code, Code::ExprSyntax);
}

#[test]
fn constants_fold_and_extensions_work() {
    let f = Functions::standard().with("twice", 1, |a| match a {
        [Value::Int(i)] => Ok(Value::Int(i * 2)),
        _ => Err(EvalError::new("no matching overload for `twice`")),
    });
    assert!(f.contains("twice") && f.contains("size"));
    let p = Program::compile(
        &parse("timestamp('2024-01-01T00:00:00Z') + duration('1h')").unwrap(),
        &f,
    )
    .unwrap();
    assert!(p.constant().is_some());
    let p = Program::compile(&parse("twice(x) + 1").unwrap(), &f).unwrap();
    let vars = HashMap::from([("x".to_string(), Value::Int(4))]);
    assert_eq!(p.eval(&vars), Ok(Value::Int(9)));
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Program>();
}

#[test]
fn time_functions() {
    assert_eq!(
        ok("string(timestamp('2024-03-01T10:00:00.5+01:00'))"),
        Value::string("2024-03-01T09:00:00.5Z")
    );
    assert_eq!(ok("string(duration('1h2m3.5s'))"), Value::string("3723.5s"));
    assert_eq!(ok("duration('-1.5s') < duration('0s')"), Value::Bool(true));
    assert_eq!(
        ok("timestamp('2024-03-01T01:00:00Z').getHours('America/Los_Angeles')"),
        Value::Int(17)
    );
    assert_eq!(
        ok("timestamp('2024-03-01T01:00:00Z').getHours('+05:30')"),
        Value::Int(6)
    );
    assert!(eval("timestamp('10000-01-01T00:00:00Z')").is_err());
}

#[test]
fn json_round_trip() {
    let j =
        serde_json::json!({"b": [1, 2.5, "x", null, true], "a": {"n": 18446744073709551615u64}});
    let v = Value::from_json(&j);
    assert_eq!(v.to_json(), j);
    assert_eq!(
        ok("duration('1.5s')").to_json(),
        serde_json::Value::String("1.5s".into())
    );
}
