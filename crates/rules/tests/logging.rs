//! The logging keys: `log`, `log_default`, `[logging]`, and their errors with `file:line:col`.

use palisade_rules::{parse, Logging};

const RULES: &str = r#"version = 1
[logging]
rate = 5
burst = 7
[[port]]
name = "wan0"
[[acl]]
name = "wan-in"
log_default = true
  [[acl.rule]]
  id = "drop-telnet"
  action = "deny"
  proto = "tcp"
  dst_port = 23
  log = true
  [[acl.rule]]
  action = "permit"
  log = false
  [[acl.rule]]
  action = "permit"
[[bind]]
acl = "wan-in"
port = "wan0"
"#;

#[test]
fn log_keys_and_logging_table_are_read() {
    let l = parse("t.toml", RULES.as_bytes()).unwrap();
    let rs = &l.ruleset;
    assert_eq!(rs.logging, Logging { rate: 5, burst: 7 });
    let acl = &rs.acls[0];
    assert!(acl.log_default);
    let logs: Vec<bool> = acl.rules.iter().map(|r| r.log).collect();
    assert_eq!(logs, [true, false, false]);
}

#[test]
fn without_logging_keys_nothing_is_logged_and_defaults_hold() {
    let text = "version = 1\n[[acl]]\nname = \"a\"\n[[acl.rule]]\naction = \"deny\"\n";
    let l = parse("t.toml", text.as_bytes()).unwrap();
    assert_eq!(l.ruleset.logging, Logging { rate: 10, burst: 20 });
    assert!(!l.ruleset.acls[0].log_default);
    assert!(!l.ruleset.acls[0].rules[0].log);
}

/// Replaces `from` in RULES by `to` and returns every error as `file:line:col: message`.
fn errors(from: &str, to: &str) -> Vec<String> {
    assert!(RULES.contains(from), "{from}");
    let text = RULES.replacen(from, to, 1);
    match parse("t.toml", text.as_bytes()) {
        Ok(_) => panic!("expected an error after replacing {from:?} by {to:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_log_that_is_not_a_boolean_is_an_error_at_its_value() {
    assert_eq!(
        errors("  log = true", "  log = \"yes\""),
        [r#"t.toml:15:9: acl "wan-in" rule 1 ("drop-telnet"): log must be true or false, found string"#]
    );
    assert_eq!(
        errors("log_default = true", "log_default = 1"),
        [r#"t.toml:9:15: acl "wan-in": log_default must be true or false, found integer"#]
    );
}

#[test]
fn rate_and_burst_must_be_positive_and_bounded() {
    assert_eq!(
        errors("rate = 5", "rate = 0"),
        ["t.toml:3:8: [logging]: rate (records a second per rule) 0 is outside 1-1000000"]
    );
    assert_eq!(
        errors("burst = 7", "burst = 1000001"),
        ["t.toml:4:9: [logging]: burst (records at once per rule) 1000001 is outside 1-1000000"]
    );
    assert_eq!(
        errors("rate = 5", "rate = 2.5"),
        ["t.toml:3:8: [logging]: rate (records a second per rule): expected an integer, found float"]
    );
}

#[test]
fn unknown_keys_in_logging_are_errors_with_a_suggestion() {
    assert_eq!(
        errors("burst = 7", "brust = 7"),
        [r#"t.toml:4:1: unknown key "brust" in [logging] (did you mean "burst"?)"#]
    );
    assert_eq!(
        errors("  log = true", "  logg = true"),
        [r#"t.toml:15:3: unknown key "logg" in [[acl.rule]] (did you mean "log"?)"#]
    );
    assert_eq!(
        errors("[logging]\nrate = 5\nburst = 7\n", "logging = 3\n"),
        ["t.toml:2:11: [logging] must be a table, found integer"]
    );
}
