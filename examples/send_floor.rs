//! The floor under any fan-out on this machine: the CPU one thread spends on one small
//! non-blocking `send` to each of N loopback TCP connections, with a reader draining them
//! on another thread (as a load client does). No HTTP, no queues, no tasks: what is left is
//! the kernel's cost of a loopback send (which on loopback includes the receiver's TCP
//! processing, run in the sender's system call) plus the system call itself.
//!
//! `cargo run --release --example send_floor -- [connections=10000] [rounds=50] [bytes=250]
//! [reader pause ms=0]`
//! (the process holds 2 × connections descriptors).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU seconds (user, system) this thread has used, from /proc.
fn thread_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    // Fields after the command: state is 0, utime 11, stime 12.
    (get(11), get(12))
}

fn main() -> std::io::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10_000);
    let rounds = args.get(1).copied().unwrap_or(50);
    let bytes = args.get(2).copied().unwrap_or(250);
    let reader_pause_ms = args.get(3).copied().unwrap_or(0) as u64;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let c = TcpStream::connect(addr)?;
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        c.set_nonblocking(true)?;
        writers.push(s);
        readers.push(c);
    }

    // The reader: drains every connection in a loop, pausing `reader_pause_ms` between sweeps
    // (0: busy). Nobody waits on a socket, so the sender never pays for waking a reader:
    // its cost is the send alone.
    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while !reader_stop.load(Ordering::Relaxed) {
            if reader_pause_ms > 0 {
                std::thread::sleep(Duration::from_millis(reader_pause_ms));
            }
            for r in readers.iter_mut() {
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => total += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
            }
        }
        total
    });

    let frame = vec![b'x'; bytes];
    let (u0, s0) = thread_cpu();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut blocked = 0usize;
    for _ in 0..rounds {
        for w in writers.iter_mut() {
            match w.write(&frame) {
                Ok(k) if k == frame.len() => sent += 1,
                Ok(_) | Err(_) => blocked += 1,
            }
        }
        // A pause between rounds, as between events.
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed().as_secs_f64() - rounds as f64 * 0.02;
    let (u1, s1) = thread_cpu();
    stop.store(true, Ordering::Relaxed);
    let received = reader.join().unwrap_or(0);
    let cpu = (u1 - u0) + (s1 - s0);
    println!(
        "{n} connections × {rounds} rounds of {bytes}-byte sends: {sent} sent ({blocked} would block), {received} bytes read"
    );
    println!(
        "sender CPU {:.2} s (user {:.2}, system {:.2}) = {:.2} µs per send; sending wall time {:.2} s = {:.2} µs per send",
        cpu,
        u1 - u0,
        s1 - s0,
        cpu * 1e6 / sent.max(1) as f64,
        wall,
        wall * 1e6 / sent.max(1) as f64
    );
    Ok(())
}
