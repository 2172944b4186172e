//! Templates: parsing arbitrary strings and filling them from arbitrary JSON bodies never
//! panics; a value template filled from JSON is JSON again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sse_sidecar::events::route::Params;
use sse_sidecar::events::template::{Body, Inputs, StrTemplate, ValueTemplate};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (tpl, body) = s.split_once('\n').unwrap_or((s, "{}"));
    let request = Body::from_capture(body.as_bytes(), false);
    let response = Body::from_capture(body.as_bytes(), body.len() > 4096);
    let mut params = Params::new();
    params.insert("id".into(), "42".into());
    let query = vec![("page".to_string(), "2".to_string())];
    let headers = vec![("x-tenant".to_string(), "t".to_string())];
    let inputs = Inputs {
        params: &params,
        query: &query,
        headers: &headers,
        request: &request,
        response: &response,
    };
    if let Ok(t) = StrTemplate::parse(tpl) {
        let _ = t.render(&inputs);
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(tpl) {
        if let Ok(t) = ValueTemplate::parse(&v) {
            if let Ok(out) = t.render(&inputs) {
                let text = out.to_string();
                let _: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            }
        }
    }
});
