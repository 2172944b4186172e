//! Which changes between two configs can apply while running, and which need a restart.
//! A reload applies the hot part and reports the rest; it never half-applies a listener.

use super::model::Config;

/// Restart-only keys that differ between `old` and `new`, as YAML paths.
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.threads != new.threads {
        out.push("threads");
    }
    if old.upstream.tenancy != new.upstream.tenancy {
        out.push("upstream.tenancy");
    }
    if old.admin.listen != new.admin.listen {
        out.push("admin.listen");
    }
    if old.admin.token_env != new.admin.token_env {
        out.push("admin.token_env");
    }
    if old.admin.allowed_hosts != new.admin.allowed_hosts {
        out.push("admin.allowed_hosts");
    }
    if old.store.backend != new.store.backend {
        out.push("store.backend");
    }
    if old.store.durability != new.store.durability {
        out.push("store.durability");
    }
    if old.logging.format != new.logging.format {
        out.push("logging.format");
    }
    if old.shutdown.grace_period_seconds != new.shutdown.grace_period_seconds {
        out.push("shutdown.grace_period_seconds");
    }
    if old.authorization.max_concurrent_checks != new.authorization.max_concurrent_checks {
        out.push("authorization.max_concurrent_checks");
    }
    out
}

/// Keeps the running values of restart-only keys in `new`, so a reload applies only what
/// can change while running.
pub fn keep_restart_fields(old: &Config, new: &mut Config) {
    new.listen = old.listen;
    new.threads = old.threads;
    new.upstream.tenancy = old.upstream.tenancy;
    new.admin = old.admin.clone();
    new.store.backend = old.store.backend.clone();
    new.store.durability = old.store.durability;
    new.logging.format = old.logging.format;
    new.shutdown.grace_period_seconds = old.shutdown.grace_period_seconds;
    new.authorization.max_concurrent_checks = old.authorization.max_concurrent_checks;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    #[test]
    fn reports_and_keeps_restart_fields() {
        let old = parse_str("upstream: {address: \"127.0.0.1:1\"}\nlisten: \"127.0.0.1:8080\"")
            .expect("valid");
        let mut new = parse_str(
            "upstream: {address: \"127.0.0.1:2\"}\nlisten: \"127.0.0.1:8081\"\nthreads: 4",
        )
        .expect("valid");
        assert_eq!(restart_required(&old, &new), vec!["listen", "threads"]);
        keep_restart_fields(&old, &mut new);
        assert!(restart_required(&old, &new).is_empty());
        assert_eq!(new.upstream.addr.port(), 2, "hot fields apply");
    }

    #[test]
    fn tenancy_needs_a_restart() {
        let old = parse_str("upstream: {address: \"127.0.0.1:1\"}").expect("valid");
        let mut new =
            parse_str("upstream: {address: \"127.0.0.1:1\", tenancy: host}").expect("valid");
        assert_eq!(restart_required(&old, &new), vec!["upstream.tenancy"]);
        keep_restart_fields(&old, &mut new);
        assert_eq!(new.upstream.tenancy, old.upstream.tenancy);
    }
}
