//! Real clients against the gateway: Jupyter Server 2.x started with a gateway URL (JupyterLab's
//! path: `POST /api/sessions`, then its kernel websocket), a notebook run through nbclient with
//! Jupyter Server's gateway kernel manager, and a websocket client in both protocols. The Python
//! scripts live in `tests/clients/` and run in the venv `tests/scripts/install-deps.sh` makes;
//! `tests/clients/run.sh` starts the gateway on the local python kernelspec and stops it, and
//! every kernel, at the end.

use std::{path::PathBuf, process::Command};

use e2e::{binary, repo_root};

fn client_venv_python() -> Option<PathBuf> {
    let venv = std::env::var("KIP_TEST_CLIENT_VENV")
        .unwrap_or_else(|_| "/opt/kip-test/client-venv".to_owned());
    let python = PathBuf::from(venv).join("bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing: tests/scripts/install-deps.sh makes it",
        python.display()
    );
    eprintln!("SKIP: the kernel-client venv is missing");
    None
}

#[test]
fn jupyter_server_nbclient_and_websocket_clients_run_kernels_through_the_gateway() {
    if client_venv_python().is_none() {
        return;
    }
    let gateway = binary("gateway");
    let out = Command::new("bash")
        .arg(repo_root().join("tests/clients/run.sh"))
        .arg("gateway")
        .arg(&gateway)
        .current_dir(repo_root())
        .output()
        .expect("run tests/clients/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clients failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("clients: all passed"), "{stderr}");
    // Every client printed its summary with ok: true and left no kernel behind.
    let summaries: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(summaries.len(), 4, "{stdout}");
    for s in &summaries {
        assert_eq!(s["ok"], true, "{s}");
    }
    let session = summaries
        .iter()
        .find(|s| s.get("jupyter_server_exit").is_some())
        .expect("the Jupyter Server summary");
    assert_eq!(session["stream"], "42\n");
    assert_eq!(session["gateway_kernels_after"], 0);
}
