//! The backend as Pingora sees it: one peer built from the configured address and timeouts,
//! shared by pass-through and authorization checks (and so is their connection pool).

use pingora::upstreams::peer::HttpPeer;
use std::time::Duration;

/// The backend as a Pingora peer, with the configured timeouts.
pub fn peer(up: &crate::config::model::Upstream) -> HttpPeer {
    let mut peer = HttpPeer::new(up.addr, false, String::new());
    peer.options.connection_timeout = Some(up.connect_timeout);
    peer.options.total_connection_timeout = Some(up.connect_timeout);
    peer.options.read_timeout = Some(up.read_timeout);
    peer.options.write_timeout = Some(up.write_timeout);
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    peer
}
