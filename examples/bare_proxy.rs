//! The pass-through baseline of the Pingora version this project builds on: a `ProxyHttp`
//! with no hooks at all (every request to one upstream), nothing else. Comparing it with
//! sse-sidecar under the same load separates what the sidecar adds per request from what
//! Pingora's request path costs by itself. Used by `scripts/bench-passthrough.sh`.
//!
//! `cargo run --release --example bare_proxy -- <listen addr> <upstream addr> [threads=1]`
//!
//! Pingora's own knobs, for the pass-through comparison's variants (environment):
//! `BARE_WORK_STEALING=0` (one runtime per thread, no stealing), `BARE_POOL=N` (upstream
//! keep-alive pool size, default 128), `BARE_LISTENER_TASKS=N` (accept tasks per listener).

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bare_proxy <listen addr> <upstream addr> [threads]");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("bare_proxy: upstream must be ip:port, got {upstream}");
        std::process::exit(2);
    };
    let threads = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let defaults = ServerConf::default();
    let conf = ServerConf {
        threads,
        work_stealing: env("BARE_WORK_STEALING").map_or(defaults.work_stealing, |v| v != 0),
        upstream_keepalive_pool_size: env("BARE_POOL")
            .unwrap_or(defaults.upstream_keepalive_pool_size),
        listener_tasks_per_fd: env("BARE_LISTENER_TASKS").unwrap_or(defaults.listener_tasks_per_fd),
        ..defaults
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
