//! Configuration: the YAML file's serde mirror with every default (`file`), the compiler
//! that turns it into the model one named step per section, collecting every problem with
//! its YAML path (`validate`), the validated immutable model and its restart-only settings
//! (`model`), and the diff that tells hot changes from restart-only ones (`diff`). The
//! compiled `authorization`, `polling` and `presence` sections are their own files (`auth`,
//! `polling`, `presence`):
//! plain data the engines of those names read. The file's JSON Schema (`schema`), the
//! environment overrides applied to the file's tree before it is compiled (`overrides`:
//! env > file > defaults; `load_file` is theirs), and where each effective value came from
//! (`sources`, for `check --sources` and `check --diff`). `typescript` renders the event
//! types' schemas as TypeScript declarations (`sse-sidecar types`).

pub mod auth;
pub mod diff;
pub mod file;
pub mod model;
pub mod overrides;
pub mod polling;
pub mod presence;
pub mod schema;
pub mod sources;
pub mod typescript;
pub mod validate;

pub use model::{Config, DataSpec, Delivery, Family, Mode, Rule, StoreBackend};
pub use overrides::load_file;
pub use validate::{parse_str, ConfigError, Problem};
