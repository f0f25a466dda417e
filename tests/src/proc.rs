//! Processes the end-to-end tests spawn: the kiln binary as a [`Command`] ([`kiln`]), a guard
//! that kills its process when dropped ([`Proc`]), and `kiln serve` started on a free loopback
//! port ([`serve`]) and awaited until ready ([`wait_ready`]).

use crate::kiln_bin;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A spawned process, killed (SIGKILL) and reaped when dropped, so a failing test leaves no
/// server behind.
pub struct Proc(Child);

impl Proc {
    /// Spawns `cmd`; panics naming the program when it cannot start.
    pub fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        Proc(child)
    }

    /// Takes an already spawned child.
    pub fn from_child(child: Child) -> Proc {
        Proc(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.0.id().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name} {} failed", self.0.id());
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits (bounded) for the process to exit; `None` when it is still running at `limit`.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command for the kiln binary under test ([`kiln_bin`]).
pub fn kiln() -> Command {
    Command::new(kiln_bin())
}

/// Starts `cmd` (a [`kiln`] command; `serve` is added) on a free loopback port and returns the
/// process and its base URL (`http://127.0.0.1:PORT`), read from its first stdout line. Not yet
/// ready: see [`wait_ready`].
pub fn serve(cmd: &mut Command) -> (Proc, String) {
    cmd.arg("serve").env("KILN_HTTP_ADDR", "127.0.0.1:0");
    spawn_listening(cmd, "kiln listening on ")
}

/// Spawns `cmd` with stdout piped and returns the process and the base URL its first stdout
/// line announces after `banner` (`kiln serve` and `kiln route` both start that way).
pub fn spawn_listening(cmd: &mut Command, banner: &str) -> (Proc, String) {
    cmd.stdout(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    let stdout = proc.child().stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("reading the first line");
    let base = line
        .trim()
        .strip_prefix(banner)
        .unwrap_or_else(|| panic!("first line {line:?} does not start with {banner:?}"))
        .to_owned();
    (proc, base)
}

/// The status code of `GET {base}{path}`, or `None` when nothing answers. A plain HTTP/1.0
/// request over a socket, so it works inside and outside an async runtime alike.
pub fn http_status(base: &str, path: &str) -> Option<u16> {
    let addr = base.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Waits (bounded by `limit`) until `{base}/readyz` answers 200.
pub fn wait_ready(base: &str, limit: Duration) {
    let started = Instant::now();
    while http_status(base, "/readyz") != Some(200) {
        assert!(started.elapsed() < limit, "{base} was not ready within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
