//! A real S3-compatible server for tests: moto_server from the PyPI wheel (installed into
//! `.tools/venv` by `scripts/fetch-tools.sh`) on a free 127.0.0.1 port, killed on drop; and a
//! TCP proxy in front of it that tests stop and start to make the store go away and return.

use crate::workspace_root;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Dummy credentials (moto checks none) and no EC2 metadata lookups, for this process and
/// the `kiln` processes it starts.
pub const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "kiln-test"),
    ("AWS_SECRET_ACCESS_KEY", "kiln-test-secret"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Sets [`AWS_ENV`] in this process (once).
pub fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in AWS_ENV {
            std::env::set_var(k, v);
        }
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// Waits (bounded) until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str, mut exited: impl FnMut() -> bool) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(!exited(), "{what} exited before listening");
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr} within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a blocking call on its own thread (reqwest's blocking client refuses to run inside
/// a tokio runtime).
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("request thread panicked")
}

/// A moto_server on a free port, killed on drop.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        aws_env();
        let bin = workspace_root().join(".tools/venv/bin/moto_server");
        assert!(bin.exists(), "{} is missing: run `bash scripts/fetch-tools.sh`", bin.display());
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut moto = Moto { child: Some(child), port };
        wait_listening(port, "moto_server", || moto.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_some());
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a plain (unsigned) request; moto accepts those. Callable from
    /// sync and async tests alike (the request runs on its own thread).
    pub fn create_bucket(&self, name: &str) {
        let url = format!("{}/{name}", self.endpoint());
        let status = off_runtime(move || reqwest::blocking::Client::new().put(url).send().expect("create bucket").status());
        assert!(status.is_success(), "creating bucket {name}: {status}");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy on a fixed 127.0.0.1 port to `target`. [`Proxy::stop`] closes the listener
/// and every open connection (the server has "gone away"); [`Proxy::start`] listens again on
/// the same port. Runs on its own tokio runtime thread; stops on drop.
pub struct Proxy {
    pub port: u16,
    target: u16,
    rt: tokio::runtime::Runtime,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub fn new(target: u16) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("proxy runtime");
        let mut p = Proxy { port: free_port(), target, rt, running: None };
        p.start();
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let (port, target) = (self.port, self.target);
        let listener = self.rt.block_on(async {
            // The old listener's port may linger briefly; retry the bind (bounded).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "proxy cannot bind 127.0.0.1:{port}: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        self.running = Some(self.rt.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            // Dropping the JoinSet aborts every connection.
        }));
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.running.take() {
            h.abort();
            let _ = self.rt.block_on(h);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}
