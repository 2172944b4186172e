//! Configuration: the YAML file's serde mirror (`file`), validation that collects every
//! problem with its YAML path (`validate`), the validated immutable model (`model`), and the
//! diff that tells hot changes from restart-only ones (`diff`).

pub mod diff;
pub mod file;
pub mod model;
pub mod validate;

pub use model::{Config, DataSpec, Delivery, Family, Mode, Rule, StoreBackend};
pub use validate::{load_file, parse_str, ConfigError, Problem};
