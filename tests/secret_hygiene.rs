//! Secret hygiene, tested rather than hoped for (SPEC 9): the whole product runs at
//! `RUST_LOG=trace` with random canary credentials for every connector and a canary proxy
//! token, serves injected, echoed, refused, failing and tunneled traffic, and then every byte
//! of stdout, stderr, every file under `AXTARY_HOME`, every CLI output and every response the
//! agent got is searched for each canary. The mock must have received the canaries, so the
//! search cannot pass for want of traffic.

mod common;

use std::path::Path;

use common::{
    canary_proxy_token, contains_bytes, curl, raw_exchange, CurlOutput, Stack, PROXY_TOKEN_ENV,
};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, for the Basic form of the proxy token.
fn base64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

fn response_bytes(out: &CurlOutput) -> Vec<u8> {
    let mut all = out.head_raw.clone().into_bytes();
    all.extend_from_slice(&out.body);
    all.extend_from_slice(out.stderr.as_bytes());
    all
}

#[test]
fn canaries_never_appear_in_output_files_or_responses() {
    let proxy_token = canary_proxy_token();
    let token_for_proxy = proxy_token.clone();
    let mut stack = Stack::builder()
        .config(|c| {
            c.auth(PROXY_TOKEN_ENV)
                .connector_yaml("github", r#"deny: ["DELETE /**"]"#)
        })
        .proxy(move |p| p.env(PROXY_TOKEN_ENV, token_for_proxy).rust_log("trace"))
        .start();
    let basic_user = format!("agent:{proxy_token}");
    let bearer = format!("Proxy-Authorization: Bearer {proxy_token}");
    let mut responses: Vec<(String, CurlOutput)> = Vec::new();
    let mut record = |label: &str, out: CurlOutput| responses.push((label.to_string(), out));

    // Injected traffic for every connector, including echoes of the credential.
    let via = |args: &[&str]| -> CurlOutput {
        let mut all = vec!["--proxy-user", basic_user.as_str()];
        all.extend_from_slice(args);
        stack.curl(all)
    };
    record(
        "github user",
        via(&[
            "-H",
            "Authorization: Bearer placeholder",
            "https://api.github.com/user",
        ]),
    );
    record(
        "github echo h2",
        via(&["--http2", "https://api.github.com/echo-auth"]),
    );
    record(
        "github echo fixed",
        via(&["--http1.1", "https://api.github.com/echo-auth?fixed=1"]),
    );
    record("github 500", via(&["https://api.github.com/status/500"]));
    record(
        "github denied",
        via(&["-X", "DELETE", "https://api.github.com/repos/a/b"]),
    );
    record(
        "github host mismatch",
        via(&[
            "--http1.1",
            "-H",
            "Host: slack.com",
            "https://api.github.com/user",
        ]),
    );
    record(
        "slack post",
        via(&["-X", "POST", "https://slack.com/api/auth.test"]),
    );
    record("slack echo", via(&["https://slack.com/echo-auth"]));
    record(
        "linear graphql",
        via(&[
            "--data",
            r#"{"query":"{ viewer { id } }"}"#,
            "https://api.linear.app/graphql",
        ]),
    );
    record("linear echo", via(&["https://api.linear.app/echo-auth"]));

    // Gateway routes, with the Bearer form of the proxy token.
    for path in [
        "/github/echo-auth",
        "/slack/echo-auth?fixed=1",
        "/linear/echo-auth",
    ] {
        record(
            path,
            curl(["-H", bearer.as_str(), stack.proxy.url(path).as_str()]),
        );
    }

    // Refusals and errors.
    record(
        "no proxy token",
        stack.curl(["https://api.github.com/user"]),
    );
    record(
        "gateway without token",
        curl([stack.proxy.url("/github/user")]),
    );
    record(
        "cleartext",
        curl([
            "--proxy-user",
            basic_user.as_str(),
            "-x",
            stack.proxy.proxy_url().as_str(),
            "http://api.github.com/user",
        ]),
    );
    let wrong = raw_exchange(
        stack.proxy.addr(),
        b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\
          Proxy-Authorization: Bearer wrong-token\r\n\r\n",
    );
    assert_eq!(wrong.status, 407, "{}", wrong.head);

    // A blind tunnel.
    record(
        "tunnel",
        curl([
            "--proxy-user",
            basic_user.as_str(),
            "-x",
            stack.proxy.proxy_url().as_str(),
            "--cacert",
            &stack.ca.pem_path().to_string_lossy(),
            "https://example.test/",
        ]),
    );

    let status = stack.proxy.stop();
    assert!(
        status.success(),
        "proxy exit {status:?}\n{}",
        stack.proxy.describe()
    );

    // The traffic really happened: the upstream got every credential.
    let seen = stack.mock.seen();
    for secret in stack.secrets() {
        assert!(
            seen.iter().any(|r| r.headers_text().contains(&secret)),
            "the mock never received a canary; the search below would be vacuous"
        );
    }
    for (label, out) in &responses {
        if label.contains("echo") || label.starts_with('/') {
            out.assert_status(200);
        }
    }
    let logged = stack.proxy.stdout_bytes().len() + stack.proxy.stderr_bytes().len();
    assert!(
        logged > 1000,
        "only {logged} bytes of output at RUST_LOG=trace"
    );

    // Everything the product wrote or answered.
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("proxy stdout".into(), stack.proxy.stdout_bytes()),
        ("proxy stderr".into(), stack.proxy.stderr_bytes()),
        ("raw 407".into(), {
            let mut b = wrong.head.clone().into_bytes();
            b.extend_from_slice(&wrong.body);
            b
        }),
    ];
    for (label, out) in &responses {
        haystacks.push((format!("response: {label}"), response_bytes(out)));
    }
    for args in [
        &["ledger", "tail", "-n", "50", "--json"][..],
        &["ledger", "verify"][..],
    ] {
        let out = stack.home.run(args);
        let mut b = out.stdout.clone();
        b.extend_from_slice(&out.stderr);
        haystacks.push((format!("axtary {}", args.join(" ")), b));
    }
    let mut files = Vec::new();
    files_under(stack.home.path(), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("ledger.jsonl")),
        "{files:?}"
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        haystacks.push((format!("file {}", file.display()), bytes));
    }

    let mut canaries = stack.secrets();
    canaries.push(proxy_token.clone());
    canaries.push(base64(basic_user.as_bytes()));
    for (label, hay) in &haystacks {
        for canary in &canaries {
            assert!(
                !contains_bytes(hay, canary),
                "a canary secret appeared in {label}:\n{}",
                excerpt(hay, canary)
            );
        }
    }
}

/// The text around the first occurrence of `needle`, with the needle itself masked, so a
/// failure message shows where the leak is without repeating it.
fn excerpt(hay: &[u8], needle: &str) -> String {
    let text = String::from_utf8_lossy(hay);
    match text.find(needle) {
        Some(at) => {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            let end = (at + needle.len() + 200).min(text.len());
            let end = (end..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            text[start..end].replace(needle, "<CANARY>")
        }
        None => String::new(),
    }
}

#[test]
fn base64_helper_matches_known_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"agent:secret"), "YWdlbnQ6c2VjcmV0");
}
