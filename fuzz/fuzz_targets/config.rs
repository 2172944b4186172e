//! The config loader: any text gives a config or a list of problems, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Host names in `listen`/`address` are resolved with the system resolver; keep the
    // fuzzer off the network (those keys only wrap ToSocketAddrs): block-style values are
    // replaced by a literal address, anything else naming them is skipped.
    let text: String = s
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            for key in ["listen:", "address:"] {
                if t.starts_with(key) {
                    return format!("{indent}{key} \"127.0.0.1:1\"\n");
                }
            }
            format!("{l}\n")
        })
        .collect();
    let rest: String = text
        .lines()
        .filter(|l| !l.contains("\"127.0.0.1:1\""))
        .collect();
    if rest.contains("listen") || rest.contains("address") {
        return;
    }
    match sse_sidecar::config::parse_str(&text) {
        Ok(cfg) => used_as_the_sidecar_would(&cfg),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

/// What an accepted config feeds into at run time must not panic either: the handshake
/// limiter turns the rate into durations (refill, Retry-After), the streams turn seconds
/// into timers.
fn used_as_the_sidecar_would(cfg: &sse_sidecar::config::Config) {
    use std::time::{Duration, Instant};
    let rate = cfg.sse.handshakes_per_client_per_second;
    let burst = f64::from(cfg.sse.handshake_burst);
    assert!(
        Duration::try_from_secs_f64(burst / rate).is_ok()
            && Duration::try_from_secs_f64(1.0 / rate).is_ok(),
        "rate {rate} with burst {burst} gives durations no clock holds"
    );
    let mut limiter = sse_sidecar::safety::HandshakeLimiter::default();
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let now = Instant::now();
    for _ in 0..cfg.sse.handshake_burst.min(64) + 1 {
        let _ = limiter.admit(ip, now, rate, cfg.sse.handshake_burst);
    }
    let now = Instant::now();
    for d in [
        cfg.sse.heartbeat,
        cfg.sse.write_timeout,
        cfg.upstream.read_timeout,
        cfg.store.max_age,
    ] {
        let _ = now
            .checked_add(d)
            .expect("a configured duration fits the clock");
    }
    for origin in &cfg.sse.allowed_origins {
        assert!(origin.is_ascii(), "accepted origin {origin:?}");
    }
    for w in &cfg.warnings {
        let _ = w.to_string();
    }
}
