//! The environment variables the client library reads, named in one place so
//! that the errors that advise setting them and the code that reads them agree.

/// Environment variable naming the `litebrokerd` executable an on-demand start
/// runs (see [`crate::autostart`]).
pub const BROKER_ENV: &str = "LITEBROKERD";

/// Environment variable with more broker uids to trust (comma-separated), read by
/// [`crate::ConnectOptions::new`]: the command-line tool's way to reach a broker of a
/// service user that admits this user with `--allow-uid`.
pub const TRUST_UID_ENV: &str = "LITEBROKER_TRUST_BROKER_UID";

/// The uids listed in [`TRUST_UID_ENV`]. An entry that is not a uid is ignored with
/// a warning rather than failing every connection.
pub(crate) fn trusted_uids_from_env() -> Vec<u32> {
    let Some(text) = std::env::var_os(TRUST_UID_ENV) else { return Vec::new() };
    let text = text.to_string_lossy();
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .filter_map(|s| match s.parse() {
            Ok(uid) => Some(uid),
            Err(_) => {
                tracing::warn!("{TRUST_UID_ENV}: ignoring {s:?}, not a uid");
                None
            }
        })
        .collect()
}
