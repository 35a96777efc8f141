//! The audit ledger (SPEC 8): one hash-chained JSON line per connector request and per
//! tunnel, with the decision taken; never a query string or a credential. `ledger verify`
//! accepts an untouched file and names the first broken line of a tampered one; `ledger tail
//! --json` prints JSON.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{random_alnum, sha256_hex, RunOutput, Stack};

const FIELDS: [&str; 13] = [
    "ts",
    "id",
    "connector",
    "method",
    "host",
    "path",
    "status",
    "durationMs",
    "decision",
    "credentialSource",
    "bytesIn",
    "bytesOut",
    "prev",
];

/// A stack whose ledger holds one line of each decision, stopped so the file is complete.
/// Returns the stack and a query-string canary that must not be in the ledger.
fn ledger_stack() -> (Stack, String) {
    let mut stack = Stack::builder()
        .without_token("linear")
        .config(|c| {
            c.connector_yaml("github", r#"deny: ["DELETE /**"]"#)
                .connector_yaml("slack", "writes: dry-run")
        })
        .start();
    let query_canary = format!("q{}", random_alnum(24));
    stack
        .curl([format!(
            "https://api.github.com/user?access_token={query_canary}"
        )])
        .assert_status(200);
    let out = stack.curl(["-X", "DELETE", "https://api.github.com/repos/acme/web"]);
    assert_eq!(out.status, 403, "{}", out.describe());
    // HTTP/1.1 for the locally answered requests with a body: their HTTP/2 framing is
    // guarded in http2.rs, and this file is about the ledger.
    let out = stack.curl([
        "--http1.1",
        "--data",
        "text=hi",
        "https://slack.com/api/chat.postMessage",
    ]);
    assert!((200..300).contains(&out.status), "{}", out.describe());
    let out = stack.curl([
        "--http1.1",
        "--data",
        "{}",
        "https://api.linear.app/graphql",
    ]);
    assert_eq!(out.status, 502, "{}", out.describe());
    common::curl([
        "-x",
        stack.proxy.proxy_url().as_str(),
        "--cacert",
        &stack.ca.pem_path().to_string_lossy(),
        "https://example.test/tunneled",
    ])
    .assert_status(200);
    let status = stack.proxy.stop();
    assert!(
        status.success(),
        "proxy exit {status:?}\n{}",
        stack.proxy.describe()
    );
    (stack, query_canary)
}

fn raw_lines(stack: &Stack) -> Vec<String> {
    String::from_utf8(stack.home.ledger_bytes())
        .expect("ledger is UTF-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// True when `text` names line `n` (`line 3`, `line: 3`, `ledger.jsonl:3`).
fn names_line(text: &str, n: usize) -> bool {
    let re =
        regex::Regex::new(&format!(r"(?i)(\bline\s*[#:]?\s*{n}\b|\.jsonl:{n}\b)")).expect("regex");
    re.is_match(text)
}

fn output_text(out: &RunOutput) -> String {
    format!("{}\n{}", out.stdout(), out.stderr())
}

#[test]
fn ledger_records_each_decision_with_spec_fields() {
    let (stack, query_canary) = ledger_stack();
    let entries = stack.home.ledger_entries();
    assert!(entries.len() >= 5, "{entries:#?}");
    for e in &entries {
        for field in FIELDS {
            assert!(e.get(field).is_some(), "ledger line lacks `{field}`: {e}");
        }
    }
    let find = |decision: &str| {
        entries
            .iter()
            .find(|e| e["decision"] == decision)
            .unwrap_or_else(|| panic!("no `{decision}` line in {entries:#?}"))
    };
    let injected = find("injected");
    assert_eq!(injected["connector"], "github");
    assert_eq!(injected["method"], "GET");
    assert_eq!(injected["host"], "api.github.com");
    assert_eq!(injected["path"], "/user");
    assert_eq!(injected["status"], 200);
    assert_eq!(injected["credentialSource"], "env");
    assert!(injected["durationMs"].is_number());
    assert!(injected["bytesOut"].is_number() && injected["bytesIn"].is_number());

    let denied = find("denied");
    assert_eq!(denied["connector"], "github");
    assert_eq!(denied["method"], "DELETE");
    assert_eq!(denied["status"], 403);

    let dry = find("dry_run");
    assert_eq!(dry["connector"], "slack");
    assert_eq!(dry["method"], "POST");

    let error = find("error");
    assert_eq!(error["connector"], "linear");
    assert_eq!(error["status"], 502);

    let tunneled = find("tunneled");
    assert!(
        tunneled["host"]
            .as_str()
            .is_some_and(|h| h.starts_with("example.test")),
        "{tunneled}"
    );

    let mut ids: Vec<String> = entries.iter().map(|e| e["id"].to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "ledger ids must be unique");

    let bytes = stack.home.ledger_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(&query_canary),
        "query string in the ledger:\n{text}"
    );
    assert!(
        !text.contains("access_token"),
        "query string in the ledger:\n{text}"
    );
    for secret in stack.secrets() {
        assert!(!text.contains(&secret), "credential in the ledger:\n{text}");
    }
    let mode = std::fs::metadata(stack.home.ledger_path())
        .expect("ledger metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "ledger mode {:o}", mode & 0o777);
}

#[test]
fn ledger_lines_form_a_sha256_chain() {
    let (stack, _) = ledger_stack();
    let lines = raw_lines(&stack);
    assert!(lines.len() >= 5);
    for i in 1..lines.len() {
        let entry: serde_json::Value = serde_json::from_str(&lines[i]).expect("JSON line");
        let prev = entry["prev"].as_str().unwrap_or("");
        let plain = sha256_hex(lines[i - 1].as_bytes());
        let with_newline = sha256_hex(format!("{}\n", lines[i - 1]).as_bytes());
        assert!(
            prev == plain || prev == with_newline,
            "line {} prev {prev} is not the SHA-256 of line {}",
            i + 1,
            i
        );
    }
}

#[test]
fn ledger_verify_accepts_untouched_file() {
    let (stack, _) = ledger_stack();
    stack.home.run(["ledger", "verify"]).assert_code(0);
}

#[test]
fn ledger_verify_names_line_with_tampered_prev() {
    let (stack, _) = ledger_stack();
    let mut lines = raw_lines(&stack);
    let mut entry: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON line");
    entry["prev"] = serde_json::Value::String("0".repeat(64));
    lines[1] = entry.to_string();
    std::fs::write(stack.home.ledger_path(), lines.join("\n") + "\n").expect("tamper");
    let out = stack.home.run(["ledger", "verify"]);
    out.assert_code(1);
    assert!(names_line(&output_text(&out), 2), "{}", output_text(&out));
}

#[test]
fn ledger_verify_detects_edited_line() {
    let (stack, _) = ledger_stack();
    let mut lines = raw_lines(&stack);
    assert!(lines.len() >= 4);
    let edited = if lines[1].contains("\"status\":403") {
        lines[1].replacen("\"status\":403", "\"status\":200", 1)
    } else {
        let mut entry: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON line");
        entry["status"] = serde_json::json!(299);
        entry.to_string()
    };
    assert_ne!(edited, lines[1]);
    lines[1] = edited;
    std::fs::write(stack.home.ledger_path(), lines.join("\n") + "\n").expect("tamper");
    let out = stack.home.run(["ledger", "verify"]);
    out.assert_code(1);
    // The edit breaks the link from line 3 back to line 2; either may be named.
    let text = output_text(&out);
    assert!(names_line(&text, 2) || names_line(&text, 3), "{text}");
}

/// Every JSON object in `v` that looks like a ledger entry.
fn ledger_objects(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) if map.contains_key("prev") && map.contains_key("id") => {
            out.push(v.clone())
        }
        serde_json::Value::Object(map) => map.values().for_each(|v| ledger_objects(v, out)),
        serde_json::Value::Array(items) => items.iter().for_each(|v| ledger_objects(v, out)),
        _ => {}
    }
}

#[test]
fn ledger_tail_json_prints_the_last_entries() {
    let (stack, _) = ledger_stack();
    let out = stack.home.run(["ledger", "tail", "-n", "2", "--json"]);
    out.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap_or_else(|e| {
        panic!(
            "`ledger tail --json` must print one JSON document ({e}):\n{}",
            out.stdout()
        )
    });
    let mut found = Vec::new();
    ledger_objects(&doc, &mut found);
    let entries = stack.home.ledger_entries();
    let last: Vec<&serde_json::Value> = entries.iter().rev().take(2).rev().collect();
    let found_ids: Vec<&serde_json::Value> = found.iter().map(|e| &e["id"]).collect();
    let last_ids: Vec<&serde_json::Value> = last.iter().map(|e| &e["id"]).collect();
    assert_eq!(found_ids, last_ids, "{}", out.stdout());

    let human = stack.home.run(["ledger", "tail", "-n", "2"]);
    human.assert_code(0);
    assert!(!human.stdout().trim().is_empty());
}

#[test]
fn ledger_off_writes_nothing() {
    let mut stack = Stack::builder().config(|c| c.ledger("off")).start();
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    assert!(stack.proxy.stop().success());
    assert!(
        !stack.home.ledger_path().exists(),
        "ledger written despite `path: off`"
    );
}
