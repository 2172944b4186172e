//! The front's request-head reader (`listener::head_state`, `classify`): any bytes, fed
//! in any pieces, reach the verdict they reach when fed at once; a complete head lies within
//! the buffer and the cap; only over-cap input is too large; classification never panics
//! and takes only `GET <stream path>` heads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sse_sidecar::listener::{classify, head_state, HeadState};

const PATH: &str = "/api/sse/events";

fuzz_target!(|data: &[u8]| {
    // First byte: the cap (64 B to 16 KiB); second: the piece size the bytes arrive in.
    let [cap, piece, rest @ ..] = data else {
        return;
    };
    let max = 64 + usize::from(*cap) * 64;
    let piece = usize::from(*piece).max(1);
    let whole = head_state(rest, max);
    match whole {
        HeadState::Complete(n) => assert!(n <= rest.len() && n <= max, "{n} of {}", rest.len()),
        HeadState::TooLarge => assert!(rest.len() > max),
        HeadState::Partial => assert!(rest.len() <= max),
    }
    // The reader stops at the first verdict other than Partial.
    let mut end = 0;
    let first = loop {
        end = (end + piece).min(rest.len());
        let st = head_state(&rest[..end], max);
        if st != HeadState::Partial || end == rest.len() {
            break st;
        }
    };
    assert_eq!(
        first, whole,
        "piecewise verdict differs (pieces of {piece})"
    );
    if let HeadState::Complete(n) = first {
        if classify(&rest[..end], PATH).is_some() {
            let head = &rest[..n];
            assert!(
                head.windows(4).any(|w| w == b"GET "),
                "a stream head is a GET"
            );
            assert!(head.windows(PATH.len()).any(|w| w == PATH.as_bytes()));
        }
    }
});
