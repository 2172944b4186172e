//! Last-Event-ID: parsing never panics, and the resume plan is always one of the defined
//! outcomes (never a replay from an id the log could not have issued).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sse_sidecar::events::types::EventId;
use sse_sidecar::sse::stream::{plan_resume, Resume};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let fanned = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    let floor = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let Ok(s) = std::str::from_utf8(&data[16..]) else {
        return;
    };
    if let Ok(id) = EventId::parse(s) {
        // What parses prints back to something that parses to the same id.
        let again = EventId::parse(&id.to_string()).expect("round trip");
        assert_eq!(again.seq, id.seq);
        assert_eq!(again.epoch, id.epoch);
    }
    match plan_resume(Some(s), "k3x9-epoch", fanned, 1000, floor) {
        Resume::After(seq) => {
            assert!(seq <= fanned && seq >= floor && fanned - seq <= 1000);
        }
        Resume::Fresh | Resume::Reset(_) => {}
    }
});
