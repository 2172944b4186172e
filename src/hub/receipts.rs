//! Receipts: what became of one browser's mutation, told to that browser's stream alone.
//!
//! A [`Ticket`] follows one matched mutation that carried `X-Client-Id` and `X-Mutation-Id`.
//! The proxy notes what happened to each rule's event (shadow, not derived, handed to the
//! hub), the hub notes each handed event's fate (stored with its id, or lost), and the proxy
//! seals the ticket with the status the client got once the answer has gone out. Whoever
//! comes last (the seal, or the hub storing the last event) gets the [`Receipt`] to route:
//! exactly one per ticket, whatever the order.
//!
//! Routing keys: a stream opened with `?client=C` is registered under
//! [`stream_key`]`(scope, tenant, C)`; a mutation whose `X-Client-Id` is `X` is routed
//! to the keys of `X` and of every prefix of `X` that ends before a `.` ([`mutation_keys`]),
//! so one browser-wide stream (`b1`) gets the receipts of its tabs (`b1.t1`, `b1.t2`). The
//! key holds the credentials' shared scope (a SHA-256 of the forwarded credential headers,
//! alike on every instance) and the tenant: a stream that claims another browser's id
//! without its cookies gets nothing. With a shared log the hub also hands each receipt to
//! the other instances (`EventLog::share_receipt`), where that browser's stream may be.

use crate::wire::{Receipt, ReceiptOutcome};
use std::sync::Mutex;

/// The routing key of a stream: its credentials' shared scope (a hash every instance
/// computes alike, `Credentials::shared_scope`), tenant and client id.
pub fn stream_key(scope: u128, tenant: Option<&str>, client: &str) -> String {
    format!("{scope:032x}|{}|{client}", tenant.unwrap_or(""))
}

/// The routing keys a mutation's receipt goes to: its full client id, and each prefix of it
/// that ends before a `.` (the browser-wide stream of a tab's id).
pub fn mutation_keys(scope: u128, tenant: Option<&str>, client: &str) -> Vec<String> {
    let mut keys: Vec<String> = client
        .match_indices('.')
        .map(|(i, _)| stream_key(scope, tenant, &client[..i]))
        .collect();
    keys.push(stream_key(scope, tenant, client));
    keys
}

/// One mutation's receipt in the making (see the module header).
pub struct Ticket {
    /// Where the receipt goes (`mutation_keys`); none for a mutation that wants no receipt
    /// (a ticket then only tells when it is complete, see `keep`).
    pub keys: Vec<String>,
    client: String,
    mutation: String,
    state: Mutex<TicketState>,
    /// Held until the ticket completes (the answer went out and every event is stored) or
    /// is dropped: the conflict check's reservation of the mutation's topics.
    held: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("client", &self.client)
            .field("mutation", &self.mutation)
            .finish()
    }
}

#[derive(Debug, Default)]
struct TicketState {
    /// Events handed to the hub, and how many of them the hub has settled.
    handed: usize,
    settled: usize,
    ids: Vec<String>,
    /// The first reason an event was lost in the hub (queue full, store error).
    lost: Option<String>,
    shadow: bool,
    /// The first reason an event was not derived.
    not_derived: Option<String>,
    conflict: Option<serde_json::Value>,
    /// The status the client got (set by `seal`).
    status: Option<u16>,
    sent: bool,
}

impl Ticket {
    pub fn new(keys: Vec<String>, client: String, mutation: String) -> Ticket {
        Ticket {
            keys,
            client,
            mutation,
            state: Mutex::new(TicketState::default()),
            held: Mutex::new(None),
        }
    }

    /// A ticket for a mutation that wants no receipt, to learn when it is complete.
    pub fn silent() -> Ticket {
        Ticket::new(Vec::new(), String::new(), String::new())
    }

    /// Whether a receipt is routed when the ticket completes.
    pub fn wants_receipt(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Keeps `value` until the ticket completes (or is dropped), then drops it.
    pub fn keep(&self, value: Box<dyn std::any::Any + Send>) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    fn with<R>(&self, f: impl FnOnce(&mut TicketState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// An event of this mutation is handed to the hub (before it is queued).
    pub fn handed(&self) {
        self.with(|s| s.handed += 1);
    }

    /// A rule's event was derived in a family in shadow.
    pub fn note_shadow(&self) {
        self.with(|s| s.shadow = true);
    }

    /// A rule's event was not made (`reason`: the metrics label).
    pub fn note_not_derived(&self, reason: &str) {
        self.with(|s| {
            s.not_derived.get_or_insert_with(|| reason.to_owned());
        });
    }

    /// A conflict was detected for this mutation (the receipt carries it).
    pub fn note_conflict(&self, conflict: serde_json::Value) {
        self.with(|s| s.conflict = Some(conflict));
    }

    /// The hub stored a handed event; the receipt when this completes the ticket.
    pub fn stored(&self, id: &str) -> Option<Receipt> {
        self.settle(|s| s.ids.push(id.to_owned()))
    }

    /// A handed event was lost in the hub (`reason`: the metrics label).
    pub fn lost(&self, reason: &str) -> Option<Receipt> {
        self.settle(|s| {
            s.lost.get_or_insert_with(|| reason.to_owned());
        })
    }

    /// The answer went out with `status`; the receipt when nothing is pending in the hub.
    /// A second seal changes nothing.
    pub fn seal(&self, status: u16) -> Option<Receipt> {
        self.with(|s| {
            if s.status.is_none() {
                s.status = Some(status);
            }
            self.ready(s)
        })
    }

    fn settle(&self, f: impl FnOnce(&mut TicketState)) -> Option<Receipt> {
        self.with(|s| {
            f(s);
            s.settled += 1;
            self.ready(s)
        })
    }

    fn ready(&self, s: &mut TicketState) -> Option<Receipt> {
        let status = s.status?;
        if s.sent || s.settled < s.handed {
            return None;
        }
        s.sent = true;
        drop(self.held.lock().unwrap_or_else(|e| e.into_inner()).take());
        let (outcome, reason) = outcome(s, status);
        Some(Receipt {
            client: self.client.clone(),
            mutation: self.mutation.clone(),
            outcome,
            events: std::mem::take(&mut s.ids),
            reason,
            status,
            conflict: s.conflict.take(),
        })
    }
}

/// The receipt's outcome: failed for a non-2xx answer; delivered when any event was stored;
/// else dropped (lost in the hub, or not derived) or shadow.
fn outcome(s: &TicketState, status: u16) -> (ReceiptOutcome, Option<String>) {
    if !(200..300).contains(&status) {
        return (ReceiptOutcome::Failed, None);
    }
    if !s.ids.is_empty() {
        return (ReceiptOutcome::Delivered, None);
    }
    if let Some(r) = s.lost.clone().or_else(|| s.not_derived.clone()) {
        return (ReceiptOutcome::Dropped, Some(r));
    }
    if s.shadow {
        return (ReceiptOutcome::Shadow, None);
    }
    (ReceiptOutcome::Dropped, Some("no_event".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket::new(vec!["k".into()], "b1.t1".into(), "m1".into())
    }

    #[test]
    fn the_last_of_seal_and_store_sends_exactly_one_receipt() {
        let t = ticket();
        t.handed();
        t.handed();
        assert!(t.stored("e-1").is_none());
        assert!(t.seal(200).is_none(), "one event still in the hub");
        let r = t.stored("e-2").expect("complete");
        assert_eq!(r.outcome, ReceiptOutcome::Delivered);
        assert_eq!(r.events, vec!["e-1", "e-2"]);
        assert!(t.seal(200).is_none() && t.lost("x").is_none(), "sent once");

        let t = ticket();
        t.handed();
        assert!(t.stored("e-1").is_none(), "not sealed yet");
        assert_eq!(t.seal(201).map(|r| r.events), Some(vec!["e-1".to_string()]));
    }

    #[test]
    fn outcomes_name_what_happened() {
        let t = ticket();
        t.note_shadow();
        assert_eq!(t.seal(200).map(|r| r.outcome), Some(ReceiptOutcome::Shadow));
        let t = ticket();
        t.note_not_derived("schema_invalid");
        let r = t.seal(200).expect("sealed");
        assert_eq!(
            (r.outcome, r.reason.as_deref()),
            (ReceiptOutcome::Dropped, Some("schema_invalid"))
        );
        let t = ticket();
        t.handed();
        assert!(t.lost("hub_queue_full").is_none());
        let r = t.seal(200).expect("sealed");
        assert_eq!(r.reason.as_deref(), Some("hub_queue_full"));
        let t = ticket();
        let r = t.seal(422).expect("sealed");
        assert_eq!((r.outcome, r.status), (ReceiptOutcome::Failed, 422));
    }

    #[test]
    fn a_tab_id_routes_to_its_browser_stream_and_to_itself() {
        let keys = mutation_keys(7, None, "b1.t1");
        assert_eq!(
            keys,
            vec![stream_key(7, None, "b1"), stream_key(7, None, "b1.t1")]
        );
        assert!(
            !keys.contains(&stream_key(8, None, "b1")),
            "other credentials"
        );
        assert!(!mutation_keys(7, None, "b10.t1").contains(&stream_key(7, None, "b1")));
        assert_ne!(
            stream_key(7, Some("a.example"), "b1"),
            stream_key(7, None, "b1")
        );
    }
}
