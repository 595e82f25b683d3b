//! The catalog's records and the gateway RPC's, converted both ways where the coordinator
//! answers or reads a request. The two are kept apart so that a change of the catalog's
//! stored format does not change the wire, nor the reverse; what they share is field by
//! field, here.

use cairn_client::records as wire;

use crate::catalog;
use crate::catalog::model;

/// Converts each element of a list.
fn each<A, B: From<A>>(items: Vec<A>) -> Vec<B> {
    items.into_iter().map(B::from).collect()
}

/// `From` both ways between a catalog struct and its wire twin with the same fields:
/// `plain` fields convert with `From`, `lists` element by element.
/// `opts`, if given, are `Option`s of twins.
macro_rules! twins {
    ($model:ty, $wire:ty, [$($plain:ident),*], [$($list:ident),*]) => {
        twins!($model, $wire, [$($plain),*], [$($list),*], []);
    };
    ($model:ty, $wire:ty, [$($plain:ident),*], [$($list:ident),*], [$($opt:ident),*]) => {
        impl From<$model> for $wire {
            fn from(value: $model) -> Self {
                Self {
                    $($plain: value.$plain.into(),)*
                    $($list: each(value.$list),)*
                    $($opt: value.$opt.map(Into::into),)*
                }
            }
        }
        impl From<$wire> for $model {
            fn from(value: $wire) -> Self {
                Self {
                    $($plain: value.$plain.into(),)*
                    $($list: each(value.$list),)*
                    $($opt: value.$opt.map(Into::into),)*
                }
            }
        }
    };
}

twins!(
    model::Bucket,
    wire::Bucket,
    [
        name,
        created_ms,
        public_read,
        mode,
        erasure,
        failure_tolerance
    ],
    []
);
twins!(
    model::ErasureProfile,
    wire::ErasureProfile,
    [k, m, segment_size],
    []
);
twins!(
    model::AccessKey,
    wire::AccessKey,
    [id, secret, name, created_ms, revoked],
    []
);
twins!(
    model::ObjectRecord,
    wire::ObjectRecord,
    [size, etag, last_modified_ms, headers, body, acl],
    [parts],
    [checksum]
);
twins!(
    model::PartSummary,
    wire::PartSummary,
    [size, etag],
    [],
    [checksum]
);
twins!(
    model::UploadChecksum,
    wire::UploadChecksum,
    [algorithm, kind],
    []
);
twins!(
    model::ObjectChecksum,
    wire::ObjectChecksum,
    [algorithm, value],
    []
);
twins!(
    model::ObjectHeaders,
    wire::ObjectHeaders,
    [
        content_type,
        content_encoding,
        cache_control,
        user_metadata,
        expires
    ],
    []
);
twins!(
    model::SegmentRecord,
    wire::SegmentRecord,
    [len, mask],
    [shards]
);
twins!(model::ShardRecord, wire::ShardRecord, [id, node, root], []);
twins!(
    model::UploadRecord,
    wire::UploadRecord,
    [bucket, key, initiated_ms, headers, erasure, acl],
    [],
    [checksum]
);
twins!(
    model::PartRecord,
    wire::PartRecord,
    [size, etag, last_modified_ms],
    [segments],
    [checksum]
);
twins!(
    catalog::ListQuery,
    wire::ListQuery,
    [prefix, delimiter, after, max],
    []
);

impl From<catalog::Listing> for wire::Listing {
    fn from(value: catalog::Listing) -> Self {
        Self {
            objects: value
                .objects
                .into_iter()
                .map(|(key, record)| (key, record.into()))
                .collect(),
            common_prefixes: value.common_prefixes,
            truncated: value.truncated,
            last: value.last,
        }
    }
}

/// `From` both ways between a catalog enum and its wire twin with the same unit variants.
macro_rules! unit_twins {
    ($model:ty, $wire:ty, [$($variant:ident),*]) => {
        impl From<$model> for $wire {
            fn from(value: $model) -> Self {
                match value { $(<$model>::$variant => Self::$variant,)* }
            }
        }
        impl From<$wire> for $model {
            fn from(value: $wire) -> Self {
                match value { $(<$wire>::$variant => Self::$variant,)* }
            }
        }
    };
}

unit_twins!(model::CannedAcl, wire::CannedAcl, [Private, PublicRead]);
unit_twins!(
    model::ChecksumType,
    wire::ChecksumType,
    [Composite, FullObject]
);
unit_twins!(
    model::ChecksumAlgorithm,
    wire::ChecksumAlgorithm,
    [Crc32, Crc32c, Crc64Nvme, Sha1, Sha256]
);

impl From<model::BucketMode> for wire::BucketMode {
    fn from(value: model::BucketMode) -> Self {
        match value {
            model::BucketMode::Plain => Self::Plain,
            model::BucketMode::NixCache { trusted_keys } => Self::NixCache { trusted_keys },
        }
    }
}

impl From<wire::BucketMode> for model::BucketMode {
    fn from(value: wire::BucketMode) -> Self {
        match value {
            wire::BucketMode::Plain => Self::Plain,
            wire::BucketMode::NixCache { trusted_keys } => Self::NixCache { trusted_keys },
        }
    }
}

impl From<model::ObjectBody> for wire::ObjectBody {
    fn from(value: model::ObjectBody) -> Self {
        match value {
            model::ObjectBody::Inline(bytes) => Self::Inline(bytes),
            model::ObjectBody::Segments { erasure, segments } => Self::Segments {
                erasure: erasure.into(),
                segments: each(segments),
            },
        }
    }
}

impl From<wire::ObjectBody> for model::ObjectBody {
    fn from(value: wire::ObjectBody) -> Self {
        match value {
            wire::ObjectBody::Inline(bytes) => Self::Inline(bytes),
            wire::ObjectBody::Segments { erasure, segments } => Self::Segments {
                erasure: erasure.into(),
                segments: each(segments),
            },
        }
    }
}

impl From<wire::WriteCondition> for catalog::WriteCondition {
    fn from(value: wire::WriteCondition) -> Self {
        match value {
            wire::WriteCondition::Absent => Self::Absent,
            wire::WriteCondition::ETag(etag) => Self::ETag(etag),
        }
    }
}

impl From<catalog::MoveReason> for wire::MoveReason {
    fn from(value: catalog::MoveReason) -> Self {
        match value {
            catalog::MoveReason::Repair => Self::Repair,
            catalog::MoveReason::Drain => Self::Drain,
            catalog::MoveReason::Rebalance => Self::Rebalance,
            catalog::MoveReason::Spread => Self::Spread,
        }
    }
}

impl From<wire::MoveReason> for catalog::MoveReason {
    fn from(value: wire::MoveReason) -> Self {
        match value {
            wire::MoveReason::Repair => Self::Repair,
            wire::MoveReason::Drain => Self::Drain,
            wire::MoveReason::Rebalance => Self::Rebalance,
            wire::MoveReason::Spread => Self::Spread,
        }
    }
}

impl From<model::ObjectVersion> for wire::ObjectVersion {
    fn from(value: model::ObjectVersion) -> Self {
        Self(value.0)
    }
}

impl From<wire::ObjectVersion> for model::ObjectVersion {
    fn from(value: wire::ObjectVersion) -> Self {
        Self(value.0)
    }
}

impl From<wire::RequestId> for catalog::RequestId {
    fn from(value: wire::RequestId) -> Self {
        Self(value.0)
    }
}

#[cfg(test)]
mod tests {
    use cairn_erasure::{SegmentNonce, ShardRoot};
    use cairn_proto::identity::SecretKey;
    use cairn_proto::ids::ShardId;

    use super::*;

    /// A gateway asks read orders by the version it computed from the wire's record, and
    /// the coordinator compares it with the catalog's: both must hash alike.
    #[test]
    fn versions_agree_across_the_wire() {
        let node = SecretKey::from_seed([1; 32]).public();
        let segment = model::SegmentRecord {
            len: 100,
            shards: vec![model::ShardRecord {
                id: ShardId([7; 16]),
                node,
                root: ShardRoot::of(b"shard"),
            }],
            mask: Some(SegmentNonce::random().unwrap()),
        };
        for body in [
            model::ObjectBody::Inline(b"narinfo".to_vec()),
            model::ObjectBody::Segments {
                erasure: model::ErasureProfile::PRODUCTION,
                segments: vec![segment.clone(), segment],
            },
        ] {
            let record = model::ObjectRecord {
                size: 100,
                etag: "\"etag\"".into(),
                last_modified_ms: 5,
                headers: model::ObjectHeaders {
                    expires: Some("Thu, 01 Dec 1994 16:00:00 GMT".into()),
                    ..Default::default()
                },
                body,
                acl: model::CannedAcl::PublicRead,
                parts: vec![model::PartSummary {
                    size: 100,
                    etag: "\"part\"".into(),
                    checksum: Some(model::ObjectChecksum {
                        algorithm: model::ChecksumAlgorithm::Sha256,
                        value: "AAAA".into(),
                    }),
                }],
                checksum: Some(model::ObjectChecksum {
                    algorithm: model::ChecksumAlgorithm::Crc32,
                    value: "AAAAAA==".into(),
                }),
            };
            let sent = wire::ObjectRecord::from(record.clone());
            assert_eq!(wire::ObjectVersion::from(record.version()), sent.version());
            assert_eq!(model::ObjectRecord::from(sent), record);
        }
    }
}
