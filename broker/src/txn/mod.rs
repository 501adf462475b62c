//! The idempotent producer's ids, handed out by InitProducerId from blocks the controller
//! records (the per-partition producer state that drops retried batches lives with the
//! log, in `log::producer_state`). Transactions (a coordinator, control batches, the last
//! stable offset) are not built; this module is where they go.

use crate::metadata::{ApiError, Controller};

/// Producer ids claimed from the controller at a time: one metadata record (and fsync) per
/// this many InitProducerId calls.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Hands out producer ids from blocks the controller records in the metadata log. Ids left
/// in a block at shutdown are skipped, never reused: uniqueness across restarts is what
/// lets a restarted broker trust the producer state it rebuilds from the logs.
#[derive(Default)]
pub struct ProducerIdManager {
    block: tokio::sync::Mutex<std::ops::Range<i64>>,
}

impl ProducerIdManager {
    pub async fn next_id(&self, controller: &Controller) -> Result<i64, ApiError> {
        let mut block = self.block.lock().await;
        if block.is_empty() {
            *block = controller
                .allocate_producer_ids(PRODUCER_ID_BLOCK_SIZE)
                .await?;
        }
        let id = block.start;
        block.start += 1;
        Ok(id)
    }
}
