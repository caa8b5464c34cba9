//! The broker under test: the release `litebrokerd` next to `lbbench`, started
//! through the test kit's [`Broker`] and stopped by request.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use litebroker_client::Client;
use litebroker_tests::{proc_status_field, Broker};

use crate::scenario::SyncMode;

/// A started broker and a client of its own (for `status`, `ping`, `shutdown`).
pub struct BrokerUnderTest {
    broker: Broker,
    pub client: Client,
}

/// Starts `litebrokerd --db <db> --synchronous <sync> <extra>` and waits until it
/// listens. Logged at `info`: nothing per request, and the readiness line.
pub fn start(db: &Path, sync: SyncMode, extra: &[&str]) -> Result<BrokerUnderTest> {
    let mut cmd = Broker::command(db, "info");
    cmd.args(["--synchronous", sync.as_str()]).args(extra);
    let broker = Broker::spawn_cmd(cmd, db).try_ready().map_err(|e| anyhow!(e))?;
    let client = broker.client("lbbench-999");
    Ok(BrokerUnderTest { broker, client })
}

impl BrokerUnderTest {
    /// Peak resident set size (VmHWM), KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        proc_status_field(self.broker.pid(), "VmHWM").unwrap_or(0)
    }

    /// Asks the broker to shut down and waits until it exited cleanly.
    pub fn stop(mut self) -> Result<()> {
        self.client.shutdown().ok();
        match self.broker.wait_exit(Duration::from_secs(30)) {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("litebrokerd exited with {st}:\n{}", self.broker.log()),
            // Dropping the broker kills it.
            None => bail!("litebrokerd did not stop in time"),
        }
    }
}
