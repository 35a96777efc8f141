//! Config errors (SPEC 3, 5): unknown keys are errors, never ignored, and every config error
//! exits 2 naming `axtary.yml:LINE:COLUMN`, without the proxy ever starting to listen.

mod common;

use common::{Home, RunOutput};

/// Runs `axtary proxy` on `yaml` and expects exit 2 before listening.
fn refuse(yaml: &str) -> RunOutput {
    let home = Home::new();
    let path = home.write_config(yaml);
    let out = home.proxy(&path).run_to_exit();
    out.assert_code(2);
    assert!(
        !out.stdout().contains("listening on"),
        "the proxy started on a bad config\n{}",
        out.stdout()
    );
    out
}

/// The `LINE:COL` pairs that follow `axtary.yml:` in the output.
fn locations(out: &RunOutput) -> Vec<(u32, u32)> {
    let re = regex::Regex::new(r"axtary\.yml:(\d+):(\d+)").expect("regex");
    let text = format!("{}\n{}", out.stderr(), out.stdout());
    re.captures_iter(&text)
        .filter_map(|c| Some((c[1].parse().ok()?, c[2].parse().ok()?)))
        .collect()
}

fn assert_location(out: &RunOutput, line: u32, col: Option<u32>) {
    let locs = locations(out);
    let ok = locs
        .iter()
        .any(|&(l, c)| l == line && col.is_none_or(|col| c == col));
    assert!(
        ok,
        "expected axtary.yml:{line}:{} in the output, found {locs:?}\n--- stderr\n{}",
        col.map_or("COL".to_string(), |c| c.to_string()),
        out.stderr()
    );
}

#[test]
fn unknown_proxy_key_names_file_line_and_column() {
    let out = refuse("version: 1\nproxy:\n  listn: 127.0.0.1:0\n");
    assert_location(&out, 3, Some(3));
    assert!(out.stderr().contains("listn"), "{}", out.stderr());
}

#[test]
fn unknown_top_level_key_names_line_and_column() {
    let out = refuse("version: 1\nproxy:\n  listen: 127.0.0.1:0\nconectors: {}\n");
    assert_location(&out, 4, Some(1));
    assert!(out.stderr().contains("conectors"), "{}", out.stderr());
}

#[test]
fn unknown_connector_key_names_line_and_column() {
    let out = refuse(
        "version: 1\n\
         proxy:\n  listen: 127.0.0.1:0\n\
         connectors:\n  github:\n    provider: github\n    mode: token\n    tokenEnvv: X\n",
    );
    assert_location(&out, 8, Some(5));
    assert!(out.stderr().contains("tokenEnvv"), "{}", out.stderr());
}

#[test]
fn unknown_guard_key_is_an_error() {
    let out = refuse(
        "version: 1\n\
         proxy:\n  listen: 127.0.0.1:0\n\
         connectors:\n  github:\n    provider: github\n    mode: token\n    tokenEnv: X\n    \
         rateLimit: { perMinute: 60, brust: 2 }\n",
    );
    assert_location(&out, 9, None);
    assert!(out.stderr().contains("brust"), "{}", out.stderr());
}

#[test]
fn invalid_value_names_line_and_column() {
    let out = refuse("version: 1\nproxy:\n  listen: 127.0.0.1:0\n  unmatched: maybe\n");
    assert_location(&out, 4, None);
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let out = refuse("version: 1\nproxy:\n  listen: 127.0.0.1:0\n  unmatched: deny: tunnel\n");
    assert_location(&out, 4, None);
}

#[test]
fn unclosed_quote_names_line_and_column() {
    let out = refuse("version: 1\nproxy:\n  listen: \"127.0.0.1:0\n");
    assert_location(&out, 3, None);
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let home = Home::new();
    let missing = home.path().join("does-not-exist.yml");
    let out = home.proxy(&missing).run_to_exit();
    out.assert_code(2);
    assert!(
        out.stderr().contains("does-not-exist.yml"),
        "{}",
        out.stderr()
    );
}
