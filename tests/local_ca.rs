//! The local CA (SPEC 2, 5): created on first need under `AXTARY_HOME/ca` with the key
//! readable by the owner only, reused across restarts, and reported by `axtary ca path`.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{canary_github, ConfigBuilder, Home, MockProvider, TestCa, GITHUB_ENV};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn ca_is_created_with_spec_modes_and_reused_across_restarts() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let home = Home::new();
    let config = home.write_config(&ConfigBuilder::new(&ca, &mock).build());

    let mut first = home.proxy(&config).start();
    assert!(home.ca_pem().is_file());
    assert_eq!(mode(&home.ca_pem()), 0o644);
    assert_eq!(mode(&home.ca_key()), 0o600);
    let pem = std::fs::read(home.ca_pem()).expect("read ca.pem");
    assert!(String::from_utf8_lossy(&pem).contains("BEGIN CERTIFICATE"));
    assert!(first.stop().success());

    let second = home.proxy(&config).env(GITHUB_ENV, canary_github()).start();
    assert_eq!(std::fs::read(home.ca_pem()).expect("read ca.pem"), pem);
    second
        .curl(["https://api.github.com/user"])
        .assert_status(200);
}

#[test]
fn proxy_start_output_names_the_ca_path() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let home = Home::new();
    let config = home.write_config(&ConfigBuilder::new(&ca, &mock).build());
    let mut proxy = home.proxy(&config).start();
    assert!(proxy.stop().success());
    let text = format!("{}{}", proxy.stdout(), proxy.stderr());
    assert!(
        text.contains(&home.ca_pem().to_string_lossy().into_owned()),
        "start-up output should name the CA path\n{text}"
    );
}

#[test]
fn ca_path_command_prints_the_path() {
    let home = Home::new();
    home.run(["ca", "init"]).assert_code(0);
    assert!(home.ca_pem().is_file());
    let out = home.run(["ca", "path"]);
    out.assert_code(0);
    assert_eq!(out.stdout().trim(), home.ca_pem().to_string_lossy());
}
