//! Who a subscriber is: the `presence.identity` request (e.g. `GET /api/me`) sent with the
//! subscriber's forwarded credentials, its JSON answer turned into a member id and public
//! fields (`crate::presence::Identity`). Cached per (credential fingerprint, Host) for
//! `cache_ttl_seconds` in a bounded map (emptied when the config's version changes), and
//! coalesced: streams with the same credentials opening at once cost one request. Any
//! failure (no slot, timeout, non-2xx, a missing field) is anonymous, never an error: a
//! stream is never refused for presence. Fields larger than `presence.max_field_bytes` are
//! left out.

use super::{Authorizer, Credentials};
use crate::config::presence::Identity as Request;
use crate::config::Config;
use crate::events::template::{Body, Inputs};
use crate::presence::Identity;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// Most identities cached.
const MAX_CACHED: usize = 100_000;
/// Longest member id kept (a longer one is anonymous).
const MAX_ID_LEN: usize = 128;

/// (config version, credential fingerprint, Host).
type Key = (String, u128, Option<String>);
type Answer = Option<Option<Identity>>;

#[derive(Default)]
pub struct Identities {
    cache: Mutex<HashMap<Key, (Option<Identity>, Instant)>>,
    inflight: Mutex<HashMap<Key, watch::Receiver<Answer>>>,
}

impl Authorizer {
    /// The subscriber's identity under `cfg` (none: anonymous, or no identity request).
    pub async fn identify(
        self: &Arc<Self>,
        cfg: &Arc<Config>,
        creds: &Credentials,
    ) -> Option<Identity> {
        cfg.presence.identity.as_ref()?;
        let host = creds.host.as_deref().map(str::to_ascii_lowercase);
        let key: Key = (cfg.version.clone(), creds.fingerprint, host);
        if let Some(hit) = self.identities.cached(&key) {
            return hit;
        }
        let mut rx = self.identity_request(cfg, creds, key);
        let wait = cfg.authorization.check_timeout * 2 + std::time::Duration::from_secs(1);
        let answer = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().flatten(),
            _ => None,
        };
        answer
    }

    /// The running request for `key`, or one started now (in a task of its own, so it
    /// finishes and is cached even if the stream that asked goes away).
    fn identity_request(
        self: &Arc<Self>,
        cfg: &Arc<Config>,
        creds: &Credentials,
        key: Key,
    ) -> watch::Receiver<Answer> {
        let mut inflight = self
            .identities
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = inflight.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.clone(), rx.clone());
        let (me, cfg, creds) = (self.clone(), cfg.clone(), creds.clone());
        tokio::spawn(async move {
            let who = me.ask_identity(&cfg, &creds).await;
            let ttl = cfg.presence.identity.as_ref().map(|i| i.cache_ttl);
            me.identities.remember(&key, &who, ttl.unwrap_or_default());
            me.identities
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            let _ = tx.send(Some(who));
        });
        rx
    }

    /// Sends the identity request (in a check slot) and reads the answer.
    async fn ask_identity(&self, cfg: &Config, creds: &Credentials) -> Option<Identity> {
        let req = cfg.presence.identity.as_ref()?;
        let timeout = cfg.authorization.check_timeout;
        let slot =
            tokio::time::timeout(timeout, self.slots.acquire(creds.fingerprint, creds.client));
        let Ok(Some(_slot)) = slot.await else {
            return None;
        };
        let asked = self.ask(cfg, creds, (&req.method, &req.path), true);
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok((status, body))) if (200..300).contains(&status) => {
                identity_of(req, &body, cfg.presence.max_field_bytes)
            }
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                tracing::debug!(credentials = %creds.fingerprint_hex(), error = %e,
                    "identity request failed; the stream is anonymous");
                None
            }
            Err(_) => None,
        }
    }
}

/// The identity an answer gives: none without a usable id (1 to 128 characters); fields
/// over `max_field_bytes` (as JSON) are left out.
pub fn identity_of(req: &Request, body: &Body, max_field_bytes: usize) -> Option<Identity> {
    let inputs = Inputs {
        params: &Default::default(),
        query: &[],
        headers: &[],
        request: &Body::Empty,
        response: body,
    };
    let id = req.id.render(&inputs).ok()?;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return None;
    }
    let fields: serde_json::Map<String, serde_json::Value> = req
        .fields
        .iter()
        .filter_map(|(name, t)| Some((name.clone(), t.render(&inputs).ok()?.into())))
        .collect();
    let size = serde_json::Value::Object(fields.clone()).to_string().len();
    let fields = if size > max_field_bytes {
        serde_json::Map::new()
    } else {
        fields
    };
    Some(Identity { id, fields })
}

impl Identities {
    fn cached(&self, key: &Key) -> Option<Option<Identity>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (who, until) = cache.get(key)?;
        (*until > Instant::now()).then(|| who.clone())
    }

    fn remember(&self, key: &Key, who: &Option<Identity>, ttl: std::time::Duration) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if cache.len() >= MAX_CACHED {
            // Entries of older config versions go first with the expired ones.
            cache.retain(|k, (_, until)| *until > now && k.0 == key.0);
            if cache.len() >= MAX_CACHED {
                let victims: Vec<Key> = cache.keys().take(MAX_CACHED / 8).cloned().collect();
                for k in victims {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(key.clone(), (who.clone(), now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(yaml: &str) -> (Request, usize) {
        let text = format!("upstream: {{address: \"127.0.0.1:1\"}}\npresence:\n{yaml}");
        let cfg = crate::config::parse_str(&text).expect("config");
        let max = cfg.presence.max_field_bytes;
        (cfg.presence.identity.expect("identity"), max)
    }

    fn body(json: &str) -> Body {
        Body::from_capture(json.as_bytes(), false)
    }

    #[test]
    fn an_answer_gives_the_id_and_fields_or_nothing() {
        let (req, max) = request(
            "  identity: {check: \"GET /api/me\", id: \"{response.user}\", fields: {name: \"{response.name}\"}}\n",
        );
        let who = identity_of(&req, &body(r#"{"user":"alice","name":"Alice"}"#), max).expect("id");
        assert_eq!(who.id, "alice");
        assert_eq!(
            who.fields.get("name"),
            Some(&serde_json::Value::from("Alice"))
        );
        assert_eq!(
            identity_of(&req, &body(r#"{"name":"Alice"}"#), max),
            None,
            "no id"
        );
        assert_eq!(
            identity_of(&req, &body(r#"{"user":""}"#), max),
            None,
            "empty id"
        );
        let long = format!(r#"{{"user":"{}"}}"#, "x".repeat(129));
        assert_eq!(identity_of(&req, &body(&long), max), None, "id too long");
        let big = format!(r#"{{"user":"bob","name":"{}"}}"#, "n".repeat(600));
        let who = identity_of(&req, &body(&big), max).expect("id");
        assert!(
            who.fields.is_empty(),
            "fields over max_field_bytes are left out"
        );
    }
}
