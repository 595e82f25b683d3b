//! The S3 operations, one file per family; each adds `op_*` methods to
//! [`crate::service::Gateway`].

mod acl;
mod attributes;
mod bucket;
mod copy;
mod delete;
mod get;
mod list;
mod multipart;
mod put;
