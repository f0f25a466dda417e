//! `kiln` as a Lambda function under cargo-lambda's emulator (installed by
//! scripts/fetch-tools.sh into .tools/bin): the emulator serves the Runtime API the kiln
//! process polls and the Invoke API (`POST /2015-03-31/functions/_/invocations`) callers use.
//! Used by tests/tests/lambda.rs and tests/tests/route.rs.

use crate::proc::{kiln, Proc};
use crate::workspace_root as root;
use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn emulator_bin() -> PathBuf {
    let p = root().join(".tools/bin/cargo-lambda");
    assert!(p.exists(), "{} is missing: run `bash scripts/fetch-tools.sh` (make test does)", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The emulator and one kiln function process attached to it (function name `_`). Both are
/// killed when dropped.
pub struct Function {
    pub port: u16,
    emulator: Option<Proc>,
    _kiln: Proc,
    /// Holds the emulator's stub package and the default store (`store/`).
    pub dir: tempfile::TempDir,
    client: reqwest::blocking::Client,
}

impl Function {
    /// Starts the emulator on a free loopback port and kiln in Lambda mode under it, with a
    /// store in [`Function::dir`], the `debug` kind, `lambda.kinds = thumbnail,debug` and
    /// the workspace's data/ readable; `env` is applied last (overrides any of these).
    pub fn start(env: &[(&str, &str)]) -> Function {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // The emulator reads `cargo metadata` of the folder it starts in: give it a stub package.
        std::fs::create_dir_all(dir.path().join("fn/src")).unwrap();
        std::fs::write(dir.path().join("fn/Cargo.toml"), "[package]\nname = \"f\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[workspace]\n").unwrap();
        std::fs::write(dir.path().join("fn/src/main.rs"), "fn main() {}\n").unwrap();
        let emulator = Proc::spawn(
            Command::new(emulator_bin())
                .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
                .current_dir(dir.path().join("fn"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "emulator did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut cmd = kiln();
        cmd.env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}/.rt"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
            .env("KILN_STORE_URL", format!("file://{}/store/", dir.path().display()))
            .env("KILN_DEBUG_KINDS", "1")
            .env("KILN_LAMBDA_KINDS", "thumbnail,debug")
            // lambda is confined: the photos are read from the workspace's data/.
            .env("KILN_SOURCES_ALLOW", format!("file://{}/data/", root().display()))
            .env("KILN_LOG", "warn")
            .env_remove("KILN_MODE")
            .env_remove("KILN_CONFIG")
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let kiln = Proc::spawn(&mut cmd);
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        Function { port, emulator: Some(emulator), _kiln: kiln, dir, client }
    }

    /// The emulator's base URL (the Invoke API's endpoint).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the emulator: the function becomes unreachable.
    pub fn stop_emulator(&mut self) {
        if let Some(mut e) = self.emulator.take() {
            e.kill();
        }
    }

    pub fn invoke_raw(&self, event: &Value) -> reqwest::blocking::Response {
        self.client
            .post(format!("http://127.0.0.1:{}/2015-03-31/functions/_/invocations", self.port))
            .body(event.to_string())
            .send()
            .unwrap()
    }

    pub fn invoke(&self, event: &Value) -> Value {
        let r = self.invoke_raw(event);
        assert_eq!(r.status(), 200);
        r.json().unwrap()
    }
}
