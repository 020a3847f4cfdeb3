//! Receipts (contract: Provable order): every ack carries `X-Barrage-Receipt`, the signed
//! checkpoint of its request's seq, in the header and in the body; it verifies with the key of
//! `/v1/public-key` and names the chain the handover API serves for that seq. A forged one does
//! not verify. Real barrage binary, real SMTP receiver on loopback.

mod ack_support;
mod support;

use std::time::Duration;

use ack_support::{start_acked, wait_until};
use contract::chain::{Checkpoint, RECEIPT_HEADER, parse_hex, parse_receipt_header};
use support::{Client, request_mail};

const REQUESTS: usize = 5;

fn verifies(key: &[u8; 32], receipt: &Checkpoint) -> bool {
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    parse_hex::<64>(&receipt.signature)
        .is_some_and(|s| key.verify(receipt.signed_text().as_bytes(), &s).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ack_carries_a_signed_receipt_of_its_place() {
    let acked = start_acked("").await;
    let (barrage, sink) = (&acked.barrage, &acked.sink);
    let mut client = Client::greet(barrage.smtp).await;
    for n in 0..REQUESTS {
        let mail = request_mail(&format!("<{n}@receipt.test>"), &format!("r{n}.fr"));
        assert_eq!(client.submit("a@client.example", &mail).await.code, 250);
    }
    wait_until("every ack", Duration::from_secs(60), || {
        sink.received().len() >= REQUESTS
    })
    .await;
    let key = barrage.get("/v1/public-key").await;
    let key = parse_hex::<32>(key["public_key"].as_str().unwrap()).unwrap();
    let rows = barrage.all_requests().await;
    for ack in sink.received() {
        let header = ack.header(RECEIPT_HEADER).expect("a receipt header");
        let receipt = parse_receipt_header(&header).expect("a well-formed receipt");
        assert_eq!(receipt.seq, ack.ticket());
        let row = &rows[receipt.seq as usize - 1];
        assert_eq!(receipt.chain, row["chain"].as_str().unwrap());
        assert_eq!(receipt.accepted_at.as_deref(), row["accepted_at"].as_str());
        assert!(verifies(&key, &receipt), "{header}");
        let json = serde_json::to_string(&receipt).unwrap();
        assert!(
            ack.body().contains(&format!("Receipt: {json}")),
            "{}",
            ack.body()
        );
        let other_chain = Checkpoint {
            chain: rows[0]["chain"].as_str().unwrap().to_string(),
            ..receipt.clone()
        };
        assert!(receipt.seq == 1 || !verifies(&key, &other_chain));
        let mut forged = receipt.clone();
        forged.signature.replace_range(
            0..2,
            if forged.signature.starts_with("00") {
                "11"
            } else {
                "00"
            },
        );
        assert!(!verifies(&key, &forged));
    }
}
