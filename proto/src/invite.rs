//! [`JoinToken`]: what an operator hands a volunteer so their node can join.
//!
//! A token carries where the coordinator is, the key it must present (and that signs every
//! order the node will obey), and a one-time secret the coordinator knows only by its hash.
//! Its text form is `cairn-join-1-` followed by hex, safe to paste into a shell or a config.

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;

const PREFIX: &str = "cairn-join-1-";

/// An invitation to join a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Coordinator members' QUIC addresses.
    pub coordinators: Vec<String>,
    /// The coordinator key.
    pub key: PublicKey,
    /// The one-time secret.
    pub secret: [u8; 32],
}

/// A string that is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Cairn join token (expected {PREFIX}… as printed by `cairn admin invite`)")]
pub struct BadToken;

impl JoinToken {
    /// The hash under which the coordinator records the secret.
    pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
        // Domain-separated so the hash is useless for anything but this lookup.
        let mut hasher = blake3::Hasher::new_derive_key("cairn invitation v1");
        hasher.update(secret);
        *hasher.finalize().as_bytes()
    }

    /// The token's text form.
    pub fn encode(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        let mut out = String::with_capacity(PREFIX.len() + bytes.len() * 2);
        out.push_str(PREFIX);
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Parses a token's text form.
    pub fn decode(text: &str) -> Result<Self, BadToken> {
        let hex = text.trim().strip_prefix(PREFIX).ok_or(BadToken)?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(BadToken);
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| BadToken))
            .collect::<Result<Vec<u8>, _>>()?;
        let (token, rest) = postcard::take_from_bytes::<JoinToken>(&bytes).map_err(|_| BadToken)?;
        if !rest.is_empty() || token.coordinators.is_empty() {
            return Err(BadToken);
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token = JoinToken {
            coordinators: vec!["127.0.0.1:7300".into(), "10.0.0.2:7300".into()],
            key: SecretKey::generate().public(),
            secret: [7; 32],
        };
        let text = token.encode();
        assert!(text.starts_with(PREFIX));
        assert_eq!(JoinToken::decode(&text), Ok(token.clone()));
        assert_eq!(JoinToken::decode(&format!(" {text}\n")), Ok(token));
        assert_eq!(JoinToken::decode("cairn-join-1-zz"), Err(BadToken));
        assert_eq!(JoinToken::decode(&text[..text.len() - 2]), Err(BadToken));
        assert_eq!(JoinToken::decode("hello"), Err(BadToken));
        assert_ne!(
            JoinToken::secret_hash(&[1; 32]),
            JoinToken::secret_hash(&[2; 32])
        );
    }
}
