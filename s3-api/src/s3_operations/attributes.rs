//! GetObjectAttributes: an object's ETag, size, storage class, checksum and parts (with
//! their checksums), without its bytes.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::service::{Gateway, etag, timestamp};

/// Most parts one answer lists (S3's default and largest `max-parts`).
const MAX_PARTS: i32 = 1000;

impl Gateway {
    pub(crate) async fn op_get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let input = req.input;
        if input.version_id.is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "objects have no versions here",
            ));
        }
        // s3s hands the header over as one entry: the names are comma-separated in it.
        let asked: Vec<&str> = input
            .object_attributes
            .iter()
            .flat_map(|a| a.as_str().split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        let known = [
            ObjectAttributes::CHECKSUM,
            ObjectAttributes::ETAG,
            ObjectAttributes::OBJECT_PARTS,
            ObjectAttributes::OBJECT_SIZE,
            ObjectAttributes::STORAGE_CLASS,
        ];
        if let Some(unknown) = asked
            .iter()
            .find(|a| !known.iter().any(|k| k.eq_ignore_ascii_case(a)))
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("Invalid attribute name specified: {unknown}"),
            ));
        }
        let wanted = |name: &str| asked.iter().any(|a| a.eq_ignore_ascii_case(name));
        let max_parts = match input.max_parts {
            None => MAX_PARTS,
            Some(n) if n >= 0 => n.min(MAX_PARTS),
            Some(_) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    "max-parts must be a non-negative integer",
                ));
            }
        };
        let marker = input.part_number_marker.unwrap_or(0).max(0);
        let object = self.object_record(&input.bucket, &input.key).await?;
        let object_parts = (wanted(ObjectAttributes::OBJECT_PARTS) && !object.parts.is_empty())
            .then(|| {
                let total = object.parts.len();
                let listed: Vec<ObjectPart> = object
                    .parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| (i as i32 + 1, part))
                    .filter(|(number, _)| *number > marker)
                    .take(max_parts as usize)
                    .map(|(number, part)| {
                        let mut listed = ObjectPart {
                            part_number: Some(number),
                            size: Some(part.size as i64),
                            ..Default::default()
                        };
                        crate::checksums::put_checksum!(listed, part.checksum.as_ref());
                        listed
                    })
                    .collect();
                let last = listed.last().and_then(|p| p.part_number).unwrap_or(marker);
                let truncated = (last as usize) < total;
                GetObjectAttributesParts {
                    total_parts_count: i32::try_from(total).ok(),
                    part_number_marker: Some(marker),
                    next_part_number_marker: Some(last),
                    max_parts: Some(max_parts),
                    is_truncated: Some(truncated),
                    parts: Some(listed),
                }
            });
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: wanted(ObjectAttributes::ETAG).then(|| etag(&object.etag)),
            object_size: wanted(ObjectAttributes::OBJECT_SIZE).then_some(object.size as i64),
            storage_class: wanted(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            checksum: object
                .checksum
                .as_ref()
                .filter(|_| wanted(ObjectAttributes::CHECKSUM))
                .map(crate::checksums::as_dto),
            object_parts,
            last_modified: Some(timestamp(object.last_modified_ms)),
            ..Default::default()
        }))
    }
}
