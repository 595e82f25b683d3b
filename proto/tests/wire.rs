//! Framing over in-memory pipes.

use cairn_erasure::ShardRoot;
use cairn_proto::identity::SecretKey;
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, SignedOrder};
use cairn_proto::wire::{
    ErrorCode, MAX_FRAME, NodeRequest, NodeResponse, WireError, read_frame, write_frame,
};
use tokio::io::AsyncWriteExt;

fn sample_request() -> NodeRequest {
    let coordinator = SecretKey::from_seed([1; 32]);
    let order = Order {
        node: SecretKey::from_seed([2; 32]).public(),
        client: SecretKey::from_seed([3; 32]).public(),
        serial: 7,
        expires_at: 123,
        action: Action::Get {
            shard: ShardId([5; 16]),
            root: ShardRoot::of(b"x"),
            size: 4096,
        },
    };
    NodeRequest::GetShard {
        order: SignedOrder::sign(order, &coordinator),
        range: Some(100..200),
    }
}

#[tokio::test]
async fn frames_round_trip() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let request = sample_request();
    let responses = vec![
        NodeResponse::Deleted { existed: true },
        NodeResponse::Inventory {
            shards: vec![ShardId([1; 16]), ShardId([2; 16])],
            more: true,
        },
        NodeResponse::Error {
            code: ErrorCode::OverQuota,
            message: "full".into(),
        },
        NodeResponse::Audit {
            proofs: vec![vec![1, 2, 3], vec![]],
        },
    ];
    let to_send = responses.clone();
    let sent = request.clone();
    // The pipe is smaller than a frame, so this also checks partial reads and writes.
    let writer = tokio::spawn(async move {
        write_frame(&mut a, &sent).await.unwrap();
        for r in &to_send {
            write_frame(&mut a, r).await.unwrap();
        }
    });
    let got: NodeRequest = read_frame(&mut b).await.unwrap();
    assert_eq!(got, request);
    for expected in responses {
        let got: NodeResponse = read_frame(&mut b).await.unwrap();
        assert_eq!(got, expected);
    }
    writer.await.unwrap();
    // The writer dropped its end between frames: a clean close.
    assert!(matches!(
        read_frame::<_, NodeResponse>(&mut b).await,
        Err(WireError::Closed)
    ));
}

#[tokio::test]
async fn oversized_length_is_refused_before_reading_the_body() {
    let (mut a, mut b) = tokio::io::duplex(64);
    // Announce MAX_FRAME + 1 bytes but send none and keep the pipe open: a reader that
    // tried to read (or allocate for) the body would hang instead of answering.
    a.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        read_frame::<_, NodeRequest>(&mut b),
    )
    .await
    .expect("read_frame waited for a body it should have refused");
    match result {
        Err(WireError::TooLarge { len }) => assert_eq!(len, u64::from(MAX_FRAME) + 1),
        other => panic!("expected TooLarge, got {other:?}"),
    }

    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(matches!(
        read_frame::<_, NodeRequest>(&mut b).await,
        Err(WireError::TooLarge { .. })
    ));
    drop(a);
}

#[tokio::test]
async fn oversized_message_is_not_sent() {
    let (mut a, mut b) = tokio::io::duplex(1024);
    let big = NodeResponse::Audit {
        proofs: vec![vec![0u8; MAX_FRAME as usize]],
    };
    assert!(matches!(
        write_frame(&mut a, &big).await,
        Err(WireError::TooLarge { .. })
    ));
    // Nothing was written: the next frame is intact.
    write_frame(&mut a, &NodeResponse::Deleted { existed: false })
        .await
        .unwrap();
    let got: NodeResponse = read_frame(&mut b).await.unwrap();
    assert_eq!(got, NodeResponse::Deleted { existed: false });
}

#[tokio::test]
async fn garbage_is_malformed() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let body = [0xffu8; 10];
    a.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    a.write_all(&body).await.unwrap();
    assert!(matches!(
        read_frame::<_, NodeRequest>(&mut b).await,
        Err(WireError::Malformed(_))
    ));

    // A valid message followed by extra bytes inside the same frame.
    let (mut a, mut b) = tokio::io::duplex(256);
    let mut body = postcard::to_allocvec(&NodeResponse::Deleted { existed: true }).unwrap();
    body.push(0);
    a.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    a.write_all(&body).await.unwrap();
    assert!(matches!(
        read_frame::<_, NodeResponse>(&mut b).await,
        Err(WireError::Malformed(_))
    ));

    // An empty frame is not a message.
    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&0u32.to_be_bytes()).await.unwrap();
    assert!(matches!(
        read_frame::<_, NodeResponse>(&mut b).await,
        Err(WireError::Malformed(_))
    ));
}

#[tokio::test]
async fn eof_is_closed_or_truncated() {
    let (a, mut b) = tokio::io::duplex(64);
    drop(a);
    assert!(matches!(
        read_frame::<_, NodeRequest>(&mut b).await,
        Err(WireError::Closed)
    ));

    // Ends inside the length prefix.
    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&[0, 0]).await.unwrap();
    drop(a);
    assert!(matches!(
        read_frame::<_, NodeRequest>(&mut b).await,
        Err(WireError::Truncated)
    ));

    // Ends inside the body.
    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&100u32.to_be_bytes()).await.unwrap();
    a.write_all(&[1, 2, 3]).await.unwrap();
    drop(a);
    assert!(matches!(
        read_frame::<_, NodeRequest>(&mut b).await,
        Err(WireError::Truncated)
    ));
}

#[tokio::test]
async fn length_prefix_is_big_endian() {
    let (mut a, b) = tokio::io::duplex(256);
    let msg = NodeResponse::Deleted { existed: true };
    write_frame(&mut a, &msg).await.unwrap();
    drop(a);
    let mut raw = Vec::new();
    let mut b = b;
    tokio::io::AsyncReadExt::read_to_end(&mut b, &mut raw)
        .await
        .unwrap();
    let body = postcard::to_allocvec(&msg).unwrap();
    assert_eq!(&raw[..4], &(body.len() as u32).to_be_bytes());
    assert_eq!(&raw[4..], body.as_slice());
}
