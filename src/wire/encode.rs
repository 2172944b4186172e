//! Pure SSE framing. Nothing an event carries can break a frame: ids and event names have
//! CR, LF and NUL removed, and data is split into one `data:` line per line, so a parser
//! that follows the spec always gets back exactly what was sent.

use crate::events::Event;
use bytes::{BufMut, Bytes, BytesMut};

/// Appends one HTTP/1.1 chunk (size line, data, CRLF) without an intermediate allocation.
pub fn put_chunk(buf: &mut BytesMut, data: &[u8]) {
    use std::fmt::Write;
    let _ = write!(buf, "{:X}\r\n", data.len());
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// `parts`, one after the other, as one HTTP/1.1 chunk.
pub fn chunk(parts: &[&[u8]]) -> Bytes {
    use std::fmt::Write;
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let mut buf = BytesMut::with_capacity(len + 12);
    let _ = write!(buf, "{len:X}\r\n");
    parts.iter().for_each(|p| buf.put_slice(p));
    buf.put_slice(b"\r\n");
    buf.freeze()
}

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    for b in value.bytes() {
        if !matches!(b, b'\r' | b'\n' | 0) {
            buf.put_u8(b);
        }
    }
    buf.put_u8(b'\n');
}

fn put_data(buf: &mut BytesMut, data: &str) {
    // A JSON document from serde_json never holds a raw newline, but a frame must stay
    // well-formed whatever it is given: split on CRLF, CR or LF, drop NUL.
    let mut rest = data;
    loop {
        let cut = rest.find(['\r', '\n']);
        let line = &rest[..cut.unwrap_or(rest.len())];
        buf.put_slice(b"data: ");
        for b in line.bytes() {
            if b != 0 {
                buf.put_u8(b);
            }
        }
        buf.put_u8(b'\n');
        match cut {
            None => break,
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
        }
    }
}

/// A complete frame: optional `id`, `event`, `data`, blank line.
pub fn frame(id: Option<&str>, event: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + event.len() + 48);
    if let Some(id) = id {
        put_field(&mut buf, "id", id);
    }
    put_field(&mut buf, "event", event);
    put_data(&mut buf, data);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The frame of a stored event: `id`, `event: <type>`, `data: <event JSON>`.
pub fn event_frame(ev: &Event) -> Bytes {
    let json = serde_json::to_string(ev).unwrap_or_else(|_| "{}".into());
    frame(Some(&ev.id), &ev.event_type, &json)
}

/// A frame without an id (hello, heartbeat, control, reset): it leaves the client's last
/// event id untouched.
pub fn control_frame(event: &str, data: &serde_json::Value) -> Bytes {
    frame(None, event, &data.to_string())
}

/// `retry: <ms>` tells EventSource how long to wait before reconnecting.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_framed() {
        assert_eq!(
            &chunk(&[&[b'x'; 20], &[b'x'; 6]])[..],
            b"1A\r\nxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
        );
    }

    #[test]
    fn frames_are_well_formed() {
        let f = frame(Some("ab-1"), "card.updated", "{\"a\":1}");
        assert_eq!(
            &f[..],
            b"id: ab-1\nevent: card.updated\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn nothing_breaks_framing() {
        let f = frame(Some("a\nb\r\0"), "x\ny", "l1\nl2\r\nl3\rl4\0");
        assert_eq!(
            std::str::from_utf8(&f).expect("utf8"),
            "id: ab\nevent: xy\ndata: l1\ndata: l2\ndata: l3\ndata: l4\n\n"
        );
    }

    #[test]
    fn event_json_has_no_raw_newline() {
        let ev = Event {
            id: "e-1".into(),
            event_type: "t".into(),
            family: "f".into(),
            topics: vec!["a".into()],
            ts: 1,
            origin: Default::default(),
            data: serde_json::json!({"text": "line1\nline2 ✓ \u{0}"}),
            invalidate: vec![],
            tenant: None,
            conflict: None,
        };
        let f = event_frame(&ev);
        let s = std::str::from_utf8(&f).expect("utf8");
        assert_eq!(s.matches('\n').count(), 4, "{s}");
    }
}
