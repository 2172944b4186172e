//! Which changes between two configs can apply while running, and which need a restart:
//! the restart-only settings are [`RestartOnly`](super::model::RestartOnly), compared as a
//! whole. A reload applies the hot part and reports the rest; it never half-applies a
//! listener.

use super::model::Config;

/// Restart-only keys that differ between `old` and `new`, as YAML paths.
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let (old, new) = (old.restart_only(), new.restart_only());
    if old == new {
        return Vec::new();
    }
    old.changed(&new)
}

/// Keeps the running values of restart-only keys in `new`, so a reload applies only what
/// can change while running.
pub fn keep_restart_fields(old: &Config, new: &mut Config) {
    new.set_restart_only(old.restart_only());
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

    #[test]
    fn every_restart_only_key_is_reported_in_file_order() {
        let old = parse_str("upstream: {address: \"127.0.0.1:1\"}").expect("valid");
        let mut new = parse_str(
            "listen: \"127.0.0.1:8081\"\nthreads: 3\n\
             upstream: {address: \"127.0.0.1:1\", tenancy: host}\n\
             admin: {listen: \"127.0.0.1:9091\", token_env: T, allowed_hosts: [a.example]}\n\
             store: {backend: sqlite, durability: strict}\n\
             logging: {format: json}\n\
             shutdown: {grace_period_seconds: 9}\n\
             authorization: {max_concurrent_checks: 7}",
        )
        .expect("valid");
        assert_eq!(
            restart_required(&old, &new),
            vec![
                "listen",
                "threads",
                "upstream.tenancy",
                "admin.listen",
                "admin.token_env",
                "admin.allowed_hosts",
                "store.backend",
                "store.durability",
                "logging.format",
                "shutdown.grace_period_seconds",
                "authorization.max_concurrent_checks",
            ]
        );
        keep_restart_fields(&old, &mut new);
        assert!(restart_required(&old, &new).is_empty());
        assert_eq!(new.restart_only(), old.restart_only());
    }
}
