//! [`PublicObjects`]: the lazy node's source of shards it never kept — objects anyone can
//! download, encoded again the way the gateway encodes uploads.
//!
//! This is the attack that segment masking exists to stop: if shards were a function of the
//! public object alone, a node could delete them and, when audited, rebuild them on demand.
//! The attack is implemented as described whether or not it succeeds; tests show which.

use std::time::Duration;

use cairn_erasure::{Codec, CodecError, SegmentEncoder, ShardRoot};
use cairn_proto::ids::ShardId;
use tokio::sync::Mutex;

/// Largest public object downloaded (the refetching node is a test tool, not a mirror).
const MAX_OBJECT: u64 = 4 << 30;
/// Longest one download may take.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(120);

/// One shard rebuilt from a public object.
#[derive(Debug, Clone)]
pub struct RebuiltShard {
    /// The object it came from.
    pub url: String,
    /// The segment's index in the object.
    pub segment: u64,
    /// The shard's index in its segment (data shards first, then parity).
    pub index: usize,
    /// The BLAKE3 root of `bytes`.
    pub root: ShardRoot,
    /// The shard.
    pub bytes: Vec<u8>,
}

/// Public objects, and the shards encoding them gives.
pub struct PublicObjects {
    urls: Vec<String>,
    codec: Codec,
    segment_size: u64,
    agent: ureq::Agent,
    /// The shards of the last rebuild; the lock also keeps two audits from downloading
    /// everything at once.
    rebuilt: Mutex<Vec<RebuiltShard>>,
}

impl std::fmt::Debug for PublicObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicObjects")
            .field("urls", &self.urls)
            .field("codec", &self.codec)
            .field("segment_size", &self.segment_size)
            .finish_non_exhaustive()
    }
}

impl PublicObjects {
    /// Objects at `urls` (plain HTTP, anonymous GET), to be encoded with `k` data and `m`
    /// parity shards in segments of `segment_size` bytes, as the bucket they are in does.
    pub fn new(
        urls: Vec<String>,
        k: usize,
        m: usize,
        segment_size: u64,
    ) -> Result<Self, CodecError> {
        let codec = Codec::new(k, m)?;
        // The encoder checks the segment size; better refused at start than at an audit.
        SegmentEncoder::new(codec, segment_size, tokio::io::empty())?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(DOWNLOAD_LIMIT))
            .build()
            .new_agent();
        Ok(Self {
            urls,
            codec,
            segment_size,
            agent,
            rebuilt: Mutex::new(Vec::new()),
        })
    }

    /// The objects' addresses.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The code shards are rebuilt with.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The segment size objects are cut at.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Bytes to answer an audit of `shard` (root `root`, `size` bytes) with: the rebuilt
    /// shard with that root if any (downloading everything again when the last rebuild has
    /// none), else — a lazy node having nothing better — a rebuilt shard of the same size.
    /// `None` only when no rebuilt shard is even the right size.
    pub async fn shard_for(&self, shard: ShardId, root: ShardRoot, size: u64) -> Option<Vec<u8>> {
        let mut rebuilt = self.rebuilt.lock().await;
        if let Some(hit) = rebuilt.iter().find(|s| s.root == root) {
            tracing::info!(%shard, url = %hit.url, segment = hit.segment, index = hit.index,
                "audit answered from a rebuilt shard");
            return Some(hit.bytes.clone());
        }
        *rebuilt = self.rebuild().await;
        if let Some(hit) = rebuilt.iter().find(|s| s.root == root) {
            tracing::info!(%shard, url = %hit.url, segment = hit.segment, index = hit.index,
                "audit answered from a freshly rebuilt shard");
            return Some(hit.bytes.clone());
        }
        let guess = rebuilt.iter().find(|s| s.bytes.len() as u64 == size);
        match guess {
            Some(guess) => {
                tracing::warn!(%shard, url = %guess.url, segment = guess.segment,
                    index = guess.index, "no rebuilt shard has the audited root; guessing");
                Some(guess.bytes.clone())
            }
            None => {
                tracing::warn!(%shard, size, "no rebuilt shard of the audited size");
                None
            }
        }
    }

    /// Downloads and encodes every object; an object that cannot be fetched is skipped.
    pub async fn rebuild(&self) -> Vec<RebuiltShard> {
        let mut shards = Vec::new();
        for url in &self.urls {
            match self.rebuild_one(url).await {
                Ok(mut more) => shards.append(&mut more),
                Err(err) => tracing::warn!(%url, %err, "cannot rebuild a public object"),
            }
        }
        shards
    }

    async fn rebuild_one(&self, url: &str) -> Result<Vec<RebuiltShard>, String> {
        let (agent, owned) = (self.agent.clone(), url.to_string());
        let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let mut response = agent.get(&owned).call().map_err(|err| err.to_string())?;
            response
                .body_mut()
                .with_config()
                .limit(MAX_OBJECT)
                .read_to_vec()
                .map_err(|err| err.to_string())
        })
        .await
        .map_err(|err| err.to_string())??;
        // The streaming encoder the gateway's write path cuts and codes uploads with.
        let mut encoder =
            SegmentEncoder::new(self.codec, self.segment_size, std::io::Cursor::new(body))
                .map_err(|err| err.to_string())?;
        let mut shards = Vec::new();
        let mut segment_index = 0u64;
        while let Some(segment) = encoder.next_segment().await.map_err(|e| e.to_string())? {
            for (index, (bytes, root)) in segment.shards().zip(segment.roots()).enumerate() {
                shards.push(RebuiltShard {
                    url: url.to_string(),
                    segment: segment_index,
                    index,
                    root: *root,
                    bytes: bytes.to_vec(),
                });
            }
            segment_index += 1;
        }
        tracing::info!(%url, shards = shards.len(), "rebuilt a public object");
        Ok(shards)
    }
}
