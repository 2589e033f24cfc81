//! The `kip` command line: help, configuration errors, exit codes. Needs no component: it runs
//! the binary Cargo builds for these tests.

use std::process::{Command, Output};

/// Runs `kip` with a clean environment (only `PATH`, and the disk guard at 100 % so that no test
/// depends on how full the build machine's disk is) plus `env`.
fn run_kip(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kip"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KIP_MAX_DISK_USAGE_PERCENT", "100")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run kip")
}

/// A runtime socket nothing listens on.
const NO_RUNTIME: (&str, &str) = ("KIP_CRI_ENDPOINT", "unix:///nonexistent/kip-test.sock");

/// `kip --once` over an empty static list (so no runtime is needed) plus `env`.
fn run_nothing_to_pull(env: &[(&str, &str)]) -> Output {
    let mut all = vec![
        ("KIP_IMAGE_FETCHER", "StaticListFetcher"),
        ("KIP_IMAGES", ""),
        NO_RUNTIME,
    ];
    all.extend_from_slice(env);
    run_kip(&["--once"], &all)
}

/// stdout and stderr together.
fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_lists_every_variable_with_defaults() {
    let out = run_kip(&["--help"], &[]);
    assert!(out.status.success());
    let help = output_text(&out);
    for var in [
        "KIP_GATEWAY_HOST",
        "KIP_AUTH_TOKEN",
        "KIP_VALIDATE_CERT",
        "KIP_INTERVAL",
        "KIP_NUM_PULLERS",
        "KIP_NUM_RETRIES",
        "KIP_PULL_POLICY",
        "KIP_CRI_ENDPOINT",
        "KIP_DEFAULT_CONTAINER_REGISTRY",
        "KIP_LOG_LEVEL",
        "KIP_IMAGE_FETCHER",
        "KIP_INTERNAL_FETCHERS",
        "KIP_IMAGES",
        "KIP_CM_NAMESPACE",
        "KIP_CM_NAME",
        "KIP_CM_KEY_NAME",
        "KIP_CONTAINER_RUNTIME",
    ] {
        assert!(help.contains(&format!("env: {var}")), "--help lacks {var}");
    }
    for default in [
        "[default: http://localhost:8888]",
        "[default: 300]",
        "[default: IfNotPresent]",
        "[default: unix:///run/containerd/containerd.sock]",
        "[default: KernelSpecsFetcher]",
        "[default: auto]",
    ] {
        assert!(help.contains(default), "--help lacks {default}");
    }
}

#[test]
fn invalid_values_exit_2_naming_every_variable() {
    let out = run_kip(
        &["--once"],
        &[
            ("KIP_PULL_POLICY", "Bogus"),
            ("KIP_NUM_PULLERS", "abc"),
            ("KIP_INTERVAL", "0"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let text = output_text(&out);
    for var in [
        "KIP_PULL_POLICY=\"Bogus\"",
        "KIP_NUM_PULLERS=\"abc\"",
        "KIP_INTERVAL=\"0\"",
    ] {
        assert!(text.contains(var), "{var} not named in: {text}");
    }
}

#[test]
fn single_invalid_values_each_exit_2() {
    for (var, value) in [
        ("KIP_PULL_POLICY", "Bogus"),
        ("KIP_NUM_PULLERS", "abc"),
        ("KIP_NUM_RETRIES", "-1"),
        ("KIP_IMAGE_FETCHER", "FancyFetcher"),
        ("KIP_CONTAINER_RUNTIME", "rkt"),
        ("KIP_VALIDATE_CERT", "perhaps"),
        ("KIP_IMAGES", "ok:1,NOT VALID"),
        ("KIP_LOG_LEVEL", "chatty"),
        ("KIP_GATEWAY_HOST", "not a url"),
    ] {
        let out = run_kip(&["--once"], &[(var, value)]);
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        assert!(output_text(&out).contains(var), "{var} not named");
    }
}

#[test]
fn flag_wins_over_variable() {
    // The variable is invalid, the flag valid: the flag is used, so no configuration error.
    let out = run_kip(
        &[
            "--once",
            "--pull-policy",
            "Always",
            "--image-fetcher",
            "StaticListFetcher",
        ],
        &[("KIP_PULL_POLICY", "Bogus"), NO_RUNTIME],
    );
    assert_ne!(out.status.code(), Some(2), "{}", output_text(&out));
}

#[test]
fn empty_static_list_pulls_nothing_and_succeeds() {
    // Upstream queued an empty name here; an empty list is simply nothing to do.
    let out = run_nothing_to_pull(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let out = run_nothing_to_pull(&[("KIP_LOG_FORMAT", "json"), ("KIP_LOG_LEVEL", "DEBUG")]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        stderr.contains("\"fetcher\":\"StaticListFetcher\""),
        "fields are flattened: {stderr}"
    );
}

#[test]
fn containerd_config_is_reported_with_the_variable() {
    let out = run_kip(
        &["--once"],
        &[
            ("KIP_CONTAINER_RUNTIME", "containerd"),
            ("KIP_CONTAINERD_NAMESPACE", "bad ns"),
            ("KIP_MAX_CONCURRENT_DOWNLOADS", "0"),
            ("KIP_CONTAINERD_TRANSFER", "sometimes"),
        ],
    );
    let text = output_text(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("KIP_CONTAINERD_NAMESPACE"), "{text}");
    assert!(text.contains("KIP_MAX_CONCURRENT_DOWNLOADS"), "{text}");
    assert!(
        text.contains("KIP_CONTAINERD_TRANSFER=\"sometimes\": expected auto, on or off"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
}

#[test]
fn unreadable_pull_secret_is_a_configuration_error() {
    let out = run_kip(
        &["--once"],
        &[("KIP_DOCKER_CONFIG", "/nonexistent/kip/.dockerconfigjson")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        output_text(&out).contains("KIP_DOCKER_CONFIG"),
        "{}",
        output_text(&out)
    );
}
