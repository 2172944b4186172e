//! A real redis-server for the tests that share a store between instances: on an ephemeral
//! port below the kernel's ephemeral range, in a temp dir, killed when dropped.

use super::{free_port, wait_for, Proc};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// A redis-server on an ephemeral port, in a temp dir, killed when dropped.
pub struct Redis {
    proc: Option<Proc>,
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl Redis {
    pub async fn start(persistent: bool) -> Redis {
        let mut r = Redis {
            proc: None,
            port: port_outside_ephemeral_range(),
            dir: tempfile::tempdir().expect("tempdir"),
            persistent,
        };
        r.spawn().await;
        r
    }

    pub async fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.path().display().to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--save",
            "",
        ];
        if self.persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            args.extend(["--appendonly", "no"]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.proc = Some(Proc {
            child,
            name: "redis-server".into(),
        });
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("redis to answer PING", T, || async {
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"PING\r\n").await.ok()?;
            let mut b = [0u8; 16];
            let n = s.read(&mut b).await.ok()?;
            b[..n].starts_with(b"+PONG").then_some(())
        })
        .await
        .expect("redis up");
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal("KILL");
            let _ = p.wait_exit(T);
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// A free port below the kernel's ephemeral range: while Redis is down in these tests, a
/// reconnect attempt must never land on its own ephemeral port (a TCP self-connect).
fn port_outside_ephemeral_range() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    for _ in 0..1000 {
        let port = rand_port(10_000, low.max(10_100));
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

fn rand_port(lo: u16, hi: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(7919, Ordering::Relaxed) + nanos as u64 + std::process::id() as u64;
    lo + (n % (hi - lo) as u64) as u16
}

impl Redis {
    /// Runs `redis-cli` against this server; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
