//! Route patterns from the config and request paths: no panic; a match captures exactly
//! the pattern's parameters, each non-empty.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sse_sidecar::events::route::RoutePattern;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = s.split_once('\n').unwrap_or((s, "/"));
    let Ok(p) = RoutePattern::parse(pattern) else {
        return;
    };
    let method = p.method.clone();
    if let Some(params) = p.matches(&method, path) {
        let names: Vec<&str> = p.param_names().collect();
        assert_eq!(params.len(), names.len());
        for n in names {
            assert!(params.contains_key(n));
        }
    }
    let _ = p.matches(&http::Method::GET, path);
});
