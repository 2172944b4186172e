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
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
