//! The gateway RPC against a real coordinator process and real nodes: a registered gateway
//! places segments, stores shards on the nodes, commits objects with the nodes' receipts
//! and reads them back with the coordinator's read orders; proof that does not hold, frames
//! that do not parse and unregistered keys are refused without changing anything.

mod support;

use cairn_client::gateway_rpc::{
    GATEWAY_ALPN, GatewayRequest, GatewayResponse, NewBody, NewObject, NewSegment, ReadOrders,
    RpcCode, StoredShard,
};
use cairn_client::records::ListQuery;
use cairn_client::records::{ObjectBody, ObjectHeaders};
use cairn_erasure::Codec;
use cairn_proto::identity::SecretKey;
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, Receipt, SignedOrder, SignedReceipt, unix_now};
use cairn_proto::transport::connect;
use md5::Digest;
use support::cluster::TestCluster;
use support::coordinator::admin;
use support::rpc::RpcGateway as Gateway;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn etag(bytes: &[u8]) -> String {
    let digest = md5::Md5::digest(bytes);
    format!(
        "\"{}\"",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn put(bucket: &str, key: &str, size: u64, etag: String, body: NewBody) -> GatewayRequest {
    GatewayRequest::Put {
        bucket: bucket.into(),
        key: key.into(),
        condition: None,
        object: NewObject {
            size,
            etag,
            headers: ObjectHeaders::default(),
            body,
            acl: Default::default(),
            checksum: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_rpc_stores_reads_and_refuses_what_does_not_hold() {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    let gateway = Gateway::new(&cluster);

    // Not registered yet: refused, the mask key too.
    let (code, message) = gateway.refused(GatewayRequest::ListBuckets).await;
    assert_eq!(code, RpcCode::Forbidden, "{message}");
    let (code, _) = gateway.refused(GatewayRequest::MaskKey).await;
    assert_eq!(code, RpcCode::Forbidden);
    cluster.register_gateway(&gateway.key.public());
    // Registered: the mask key, derived from the coordinator key.
    let GatewayResponse::MaskKey(mask_key) = gateway.call(GatewayRequest::MaskKey).await else {
        panic!("no mask key");
    };
    assert_eq!(
        mask_key,
        cairn_coordinator::rpc::mask_key(&cluster.coordinator_secret())
    );
    admin(
        &cluster.coordinator,
        &["bucket", "create", "objs", "--k", "2", "--m", "1"],
    )
    .unwrap();
    let GatewayResponse::Bucket(Some(bucket)) = gateway
        .call(GatewayRequest::Bucket {
            name: "objs".into(),
        })
        .await
    else {
        panic!("bucket not found");
    };
    assert_eq!((bucket.erasure.k, bucket.erasure.m), (2, 1));

    // A small object lives inline.
    let small = b"StorePath: /nix/store/abc".to_vec();
    let response = gateway
        .call(put(
            "objs",
            "abc.narinfo",
            small.len() as u64,
            etag(&small),
            NewBody::Inline(small.clone()),
        ))
        .await;
    assert_eq!(response, GatewayResponse::Stored { existed: false });

    // A segment: placed on three distinct nodes, stored, and its proof handed in.
    let codec = Codec::new(2, 1).unwrap();
    let data = pattern(300_000, 7);
    let segment = codec.encode_segment(0, 0, data.clone());
    let good = gateway.store("objs", &segment).await;
    let mut nodes: Vec<_> = good.shards.iter().map(|s| s.order.order.node).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "one shard per node");
    let big = |segment: NewSegment| {
        put(
            "objs",
            "nar/big.nar",
            data.len() as u64,
            etag(&data),
            NewBody::Segments(vec![segment]),
        )
    };

    // Proof that does not hold is refused, and the object does not appear.
    let mut tampered = good.clone();
    tampered.shards[0].receipt.receipt.stored_at += 1;
    let mut forged_order = good.clone();
    let stranger = SecretKey::generate();
    forged_order.shards[1].order =
        SignedOrder::sign(forged_order.shards[1].order.order.clone(), &stranger);
    let mut foreign = good.clone();
    let first = foreign.shards[0].receipt.clone();
    foreign.shards[0].receipt = foreign.shards[1].receipt.clone();
    foreign.shards[1].receipt = first;
    let mut unknown_node = good.clone();
    {
        // Even an order the coordinator really signed (the test holds its key) is refused
        // when the node it names is not registered.
        let coordinator = cluster.coordinator_secret();
        let shard = ShardId([9; 16]);
        let root = segment.roots()[2];
        let size = segment.shard_len() as u64;
        let order = Order {
            node: stranger.public(),
            client: gateway.key.public(),
            serial: 1,
            expires_at: unix_now() + 60,
            action: Action::Put { shard, root, size },
        };
        let receipt = Receipt {
            node: stranger.public(),
            shard,
            root,
            size,
            serial: 1,
            stored_at: unix_now(),
        };
        unknown_node.shards[2] = StoredShard {
            order: SignedOrder::sign(order, &coordinator),
            receipt: SignedReceipt::sign(receipt, &stranger),
        };
    }
    let mut short = good.clone();
    short.shards.pop();
    let mut wrong_len = good.clone();
    wrong_len.len += 64 * 1024;
    for (what, bad, expect) in [
        ("tampered receipt", tampered, "signature does not verify"),
        (
            "forged order",
            forged_order,
            "not signed by this coordinator",
        ),
        ("foreign receipt", foreign, "another node"),
        ("unknown node", unknown_node, "is not registered"),
        ("missing shard", short, "needs 3"),
        ("wrong length", wrong_len, "shards"),
    ] {
        let (code, message) = gateway.refused(big(bad)).await;
        assert_eq!(code, RpcCode::InvalidRequest, "{what}: {message}");
        assert!(message.contains(expect), "{what}: {message}");
    }
    let response = gateway
        .call(GatewayRequest::Object {
            bucket: "objs".into(),
            key: "nar/big.nar".into(),
        })
        .await;
    assert_eq!(response, GatewayResponse::Object(None));

    // The real proof commits; the read comes with orders that fetch verified shards.
    let response = gateway.call(big(good.clone())).await;
    assert_eq!(response, GatewayResponse::Stored { existed: false });
    let GatewayResponse::Read(Some(read)) = gateway
        .call(GatewayRequest::Read {
            bucket: "objs".into(),
            key: "nar/big.nar".into(),
            range: Some(0..u64::MAX),
        })
        .await
    else {
        panic!("object not readable");
    };
    assert_eq!(read.object.size, data.len() as u64);
    let ObjectBody::Segments { segments, .. } = &read.object.body else {
        panic!("not segmented");
    };
    assert_eq!(read.orders.segments.len(), 1);
    let roots: Vec<_> = segments[0].shards.iter().map(|s| s.root).collect();
    assert_eq!(roots, segment.roots());
    // Orders only for what a reader with nothing lost fetches: the data shards holding the
    // bytes asked (each order costs the leader a signature), none for a bare lookup.
    let signed = |orders: &ReadOrders| -> Vec<bool> {
        orders
            .segments
            .iter()
            .flatten()
            .map(|o| o.is_some())
            .collect()
    };
    assert_eq!(signed(&read.orders), [true, true, false]);
    let read_of = |range: Option<std::ops::Range<u64>>| GatewayRequest::Read {
        bucket: "objs".into(),
        key: "nar/big.nar".into(),
        range,
    };
    let GatewayResponse::Read(Some(first_byte)) = gateway.call(read_of(Some(0..1))).await else {
        panic!("object not readable");
    };
    assert_eq!(signed(&first_byte.orders), [true, false, false]);
    let GatewayResponse::Read(Some(bare)) = gateway.call(read_of(None)).await else {
        panic!("object not readable");
    };
    assert!(bare.orders.segments.is_empty());
    // A degraded reader asks for every shard of the segment it decodes.
    let GatewayResponse::ReadOrders(all) = gateway
        .call(GatewayRequest::ReadOrders {
            bucket: "objs".into(),
            key: "nar/big.nar".into(),
            version: read.object.version(),
            from: 0,
            count: 1,
            range: None,
        })
        .await
    else {
        panic!("no orders for every shard");
    };
    assert_eq!(signed(&all), [true, true, true]);
    // Read a data shard and the parity shard, decode without data shard 0.
    let mut fetched = Vec::new();
    for index in [1usize, 2] {
        let order = all.segments[0][index].as_ref().unwrap();
        let (_, addr, serving) = read
            .nodes
            .iter()
            .find(|(id, _, _)| *id == order.order.node)
            .unwrap();
        assert!(serving);
        let client = gateway.node(addr, order);
        let bytes = client.get_shard(order, None).await.unwrap();
        // An order reads once: a replay is refused by the node.
        assert!(client.get_shard(order, None).await.is_err());
        fetched.push((index, bytes));
    }
    let shards: Vec<(usize, &[u8])> = fetched.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    let decoded = codec
        .decode_segment(data.len() as u64, &roots, &shards)
        .unwrap();
    assert_eq!(decoded.data, data);

    // Listings roll keys up at the delimiter.
    for key in ["a/1", "a/2", "b"] {
        gateway
            .call(put(
                "objs",
                key,
                1,
                etag(b"x"),
                NewBody::Inline(b"x".to_vec()),
            ))
            .await;
    }
    let GatewayResponse::Listing(listing) = gateway
        .call(GatewayRequest::List {
            bucket: "objs".into(),
            query: ListQuery {
                prefix: String::new(),
                delimiter: Some("/".into()),
                after: None,
                max: 3,
            },
        })
        .await
    else {
        panic!("no listing");
    };
    let keys: Vec<_> = listing.objects.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(listing.common_prefixes, ["a/"]);
    assert_eq!(keys, ["abc.narinfo", "b"]);
    assert!(listing.truncated);
    assert_eq!(listing.last.as_deref(), Some("b"));

    // Multipart: parts other than the last must be large; the ETag is S3's.
    let GatewayResponse::UploadCreated { id } = gateway
        .call(GatewayRequest::CreateUpload {
            bucket: "objs".into(),
            key: "multi".into(),
            headers: ObjectHeaders::default(),
            acl: Default::default(),
            checksum: None,
        })
        .await
    else {
        panic!("no upload");
    };
    let mut part_etags = Vec::new();
    for number in 1..=2u32 {
        let bytes = pattern(10_000, number as u8);
        let segment = codec.encode_segment(0, 0, bytes.clone());
        let stored = gateway.store("objs", &segment).await;
        part_etags.push(etag(&bytes));
        gateway
            .call(GatewayRequest::PutPart {
                upload: id.clone(),
                number,
                size: bytes.len() as u64,
                etag: etag(&bytes),
                segments: vec![stored],
                checksum: None,
            })
            .await;
    }
    let complete = |parts: Vec<(u32, String)>| GatewayRequest::CompleteUpload {
        upload: id.clone(),
        parts,
        verified: Vec::new(),
        checksum: None,
        condition: None,
    };
    let both = vec![(1, part_etags[0].clone()), (2, part_etags[1].clone())];
    let (code, _) = gateway.refused(complete(both)).await;
    assert_eq!(code, RpcCode::EntityTooSmall);
    let (code, _) = gateway
        .refused(complete(vec![(1, part_etags[1].clone())]))
        .await;
    assert_eq!(code, RpcCode::InvalidPart);
    let GatewayResponse::Completed { etag: multi, size } = gateway
        .call(complete(vec![(1, part_etags[0].clone())]))
        .await
    else {
        panic!("not completed");
    };
    let part_digest = md5::Md5::digest(pattern(10_000, 1));
    let expected = md5::Md5::digest(part_digest);
    let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(multi, format!("\"{expected}-1\""));
    assert_eq!(size, 10_000);
    let response = gateway
        .call(GatewayRequest::Upload { id: id.clone() })
        .await;
    assert_eq!(response, GatewayResponse::Upload(None));

    // Deleting makes the object disappear.
    let response = gateway
        .call(GatewayRequest::Delete {
            bucket: "objs".into(),
            key: "nar/big.nar".into(),
        })
        .await;
    assert_eq!(response, GatewayResponse::Stored { existed: true });

    // Garbage on the wire: a clear error, and the connection and coordinator carry on.
    let conn = connect(
        &gateway.endpoint,
        &gateway.key,
        cluster.coordinator.quic,
        &cluster.key,
        GATEWAY_ALPN,
    )
    .await
    .unwrap();
    for junk in [
        vec![0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xff, 0xff, 0xff, 0xff],
    ] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&junk).await.unwrap();
        send.finish().unwrap();
        let response: GatewayResponse = cairn_proto::wire::read_frame_within(&mut recv, 1 << 20)
            .await
            .unwrap();
        let GatewayResponse::Error { code, message } = response else {
            panic!("junk accepted: {response:?}");
        };
        assert_eq!(code, RpcCode::InvalidRequest, "{message}");
    }
    let response = gateway
        .call(GatewayRequest::Object {
            bucket: "objs".into(),
            key: "abc.narinfo".into(),
        })
        .await;
    let GatewayResponse::Object(Some(object)) = response else {
        panic!("inline object lost");
    };
    assert_eq!(object.body, ObjectBody::Inline(small));

    // Operators decide the lifecycle states the failure detector does not.
    let first = cluster.nodes[0].id.to_string();
    admin(&cluster.coordinator, &["node-state", &first, "active"]).unwrap();
    let view = cluster.nodes_view();
    let entry = view.iter().find(|n| n["id"] == first.as_str()).unwrap();
    assert_eq!(
        (entry["state"].as_str(), entry["vetted"].as_bool()),
        (Some("active"), Some(true))
    );
    let err = admin(&cluster.coordinator, &["node-state", &first, "suspect"]).unwrap_err();
    assert!(err.contains("an operator sets"), "{err}");

    // A removed gateway is refused from its next request on.
    admin(
        &cluster.coordinator,
        &["gateway", "remove", &gateway.key.public().to_string()],
    )
    .unwrap();
    let (code, _) = gateway.refused(GatewayRequest::ListBuckets).await;
    assert_eq!(code, RpcCode::Forbidden);
    let (code, _) = gateway.refused(GatewayRequest::MaskKey).await;
    assert_eq!(code, RpcCode::Forbidden);
}

/// A change resent under its request id (the gateway lost the first answer) is answered by
/// what the log holds for that id, whatever the checks made before proposing say now: a
/// retry whose first attempt was stored answers "stored" even though its proof no longer
/// passes (orders go stale while a gateway retries), and a refused attempt stays refused
/// even if a later attempt of the same request would pass, so an earlier attempt still on
/// its way through the log can never store what the client was told was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_change_is_answered_by_its_first_outcome_not_by_checks_made_again() {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    let gateway = Gateway::new(&cluster);
    cluster.register_gateway(&gateway.key.public());
    admin(
        &cluster.coordinator,
        &["bucket", "create", "objs", "--k", "2", "--m", "1"],
    )
    .unwrap();
    let codec = Codec::new(2, 1).unwrap();
    let once = |id: u8, request: GatewayRequest| GatewayRequest::Once {
        id: cairn_client::records::RequestId([id; 16]),
        request: Box::new(request),
    };
    let object = |key: &str, seed: u8| {
        let data = pattern(200_000, seed);
        (key.to_string(), etag(&data), data)
    };

    // Stored by its first attempt; the resend carries proof that no longer verifies.
    let (key_a, etag_a, data_a) = object("nar/a.nar", 1);
    let segment_a = gateway
        .store("objs", &codec.encode_segment(0, 0, data_a.clone()))
        .await;
    let put_a = |segment| {
        put(
            "objs",
            &key_a,
            data_a.len() as u64,
            etag_a.clone(),
            NewBody::Segments(vec![segment]),
        )
    };
    let response = gateway.call(once(1, put_a(segment_a.clone()))).await;
    assert_eq!(response, GatewayResponse::Stored { existed: false });
    let mut stale = segment_a.clone();
    stale.shards[0].receipt.receipt.stored_at += 1;
    let response = gateway.call(once(1, put_a(stale))).await;
    assert_eq!(
        response,
        GatewayResponse::Stored { existed: false },
        "the resend must answer what its first attempt stored"
    );

    // Refused at its first attempt; a resend whose proof would pass stays refused.
    let (key_b, etag_b, data_b) = object("nar/b.nar", 2);
    let segment_b = gateway
        .store("objs", &codec.encode_segment(0, 0, data_b.clone()))
        .await;
    let put_b = |segment| {
        put(
            "objs",
            &key_b,
            data_b.len() as u64,
            etag_b.clone(),
            NewBody::Segments(vec![segment]),
        )
    };
    let mut tampered = segment_b.clone();
    tampered.shards[1].receipt.receipt.stored_at += 1;
    let (code, message) = gateway.refused(once(2, put_b(tampered))).await;
    assert_eq!(code, RpcCode::InvalidRequest, "{message}");
    let (code, message) = gateway.refused(once(2, put_b(segment_b.clone()))).await;
    assert_eq!(
        code,
        RpcCode::InvalidRequest,
        "a refused request must stay refused: {message}"
    );
    let response = gateway
        .call(GatewayRequest::Object {
            bucket: "objs".into(),
            key: key_b.clone(),
        })
        .await;
    assert_eq!(response, GatewayResponse::Object(None));
    // The same proof under a new request is a new change, and stores.
    let response = gateway.call(once(3, put_b(segment_b))).await;
    assert_eq!(response, GatewayResponse::Stored { existed: false });
}
