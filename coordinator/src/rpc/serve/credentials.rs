//! The secrets a registered gateway asks for: an S3 access key's record (with its secret,
//! to check request signatures) and the cluster's segment mask key.

use cairn_client::gateway_rpc::GatewayResponse;

use crate::rpc::context::{Answer, RpcContext, internal};

/// `AccessKey`: the key's record, unless it is unknown or revoked.
pub(super) fn access_key(ctx: &RpcContext, id: &str) -> Answer {
    let key = ctx.catalog.access_key(id).map_err(internal)?;
    Ok(GatewayResponse::AccessKey(
        key.filter(|k| !k.revoked).map(Into::into),
    ))
}

/// `MaskKey`: the key every segment is masked under.
pub(super) fn mask_key(ctx: &RpcContext) -> Answer {
    Ok(GatewayResponse::MaskKey(crate::rpc::mask_key(&ctx.key)))
}
