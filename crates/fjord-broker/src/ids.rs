//! Kafka's text form of its 128-bit ids (cluster ids, directory ids): the 16 bytes in URL-safe
//! base64 without padding, 22 characters, as `org.apache.kafka.common.Uuid` prints them.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A new random id in Kafka's text form.
pub fn random() -> String {
    encode(uuid::Uuid::new_v4())
}

/// `id` in Kafka's text form.
pub fn encode(id: uuid::Uuid) -> String {
    let bits = id.as_u128();
    // 128 bits as 22 six-bit groups from the most significant, the last padded with zeros.
    (0..22)
        .map(|i| {
            let shift = 128 - 6 * (i + 1);
            let group = if shift >= 0 {
                (bits >> shift) & 63
            } else {
                (bits << -shift) & 63
            };
            ALPHABET[group as usize] as char
        })
        .collect()
}

/// The id written in Kafka's text form; None for any other text.
pub fn decode(text: &str) -> Option<uuid::Uuid> {
    let bytes = text.as_bytes();
    if bytes.len() != 22 {
        return None;
    }
    let mut bits: u128 = 0;
    for (i, c) in bytes.iter().enumerate() {
        let v = ALPHABET.iter().position(|a| a == c)? as u128;
        if i < 21 {
            bits = (bits << 6) | v;
        } else {
            // The last character holds the final 2 bits and 4 padding zeros.
            if v & 0b1111 != 0 {
                return None;
            }
            bits = (bits << 2) | (v >> 4);
        }
    }
    Some(uuid::Uuid::from_u128(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_text_form_round_trips() {
        // Kafka prints Uuid(1, 2) as AAAAAAAAAAEAAAAAAAAAAg.
        let id = uuid::Uuid::from_u64_pair(1, 2);
        assert_eq!(encode(id), "AAAAAAAAAAEAAAAAAAAAAg");
        assert_eq!(decode("AAAAAAAAAAEAAAAAAAAAAg"), Some(id));
        for _ in 0..100 {
            let id = uuid::Uuid::new_v4();
            assert_eq!(decode(&encode(id)), Some(id));
        }
        assert_eq!(decode("short"), None);
        assert_eq!(decode("AAAAAAAAAAEAAAAAAAAAA!"), None);
        assert_eq!(decode("AAAAAAAAAAEAAAAAAAAAAh"), None); // padding bits set
    }
}
