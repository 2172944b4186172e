//! SSE framing: whatever id, event name and data are given, a spec-following parser reads
//! back exactly one event with the same id, name and data (CR/LF/NUL normalized as
//! documented in src/sse/encode.rs).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sse_sidecar::wire::encode::frame;

/// A parser written after the WHATWG "interpret an event stream" steps (tests only).
fn parse(stream: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
    let mut has_data = false;
    let norm = stream.replace("\r\n", "\n").replace('\r', "\n");
    for line in norm.split('\n') {
        if line.is_empty() {
            if has_data {
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push((
                    id.clone(),
                    std::mem::take(&mut event),
                    std::mem::take(&mut data),
                ));
            }
            has_data = false;
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" if !value.contains('\0') => id = value.to_owned(),
            "event" => event = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
                has_data = true;
            }
            _ => {}
        }
    }
    out
}

fuzz_target!(|input: (String, String, String)| {
    let (id, event, data) = input;
    let f = frame(Some(&id), &event, &data);
    let text = std::str::from_utf8(&f).expect("frames are UTF-8");
    let events = parse(text);
    assert_eq!(events.len(), 1, "one frame, one event: {text:?}");
    let strip = |s: &str| {
        s.chars()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect::<String>()
    };
    let (pid, pev, pdata) = &events[0];
    // One leading space after the colon is the separator; the parser strips it once.
    assert_eq!(pid, &strip(&id));
    assert_eq!(pev, &strip(&event));
    let want = data
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\0', "");
    assert_eq!(pdata, &want);
});
