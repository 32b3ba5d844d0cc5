//! Splitting a gossip message that does not fit one datagram once framed.
//!
//! chitchat fills its replies up to the UDP payload limit (65 507 bytes)
//! and knows nothing of our framing, so in a large cluster a reply plus the
//! 44 bytes of [`super::auth`] framing can exceed what one UDP datagram
//! carries. Such a message is cut into fragments, each framed and
//! authenticated on its own (so each has its own sequence number and replay
//! check), and put back together on the receiving side before chitchat
//! decodes it.
//!
//! A fragment payload (inside the framing) is:
//!
//! ```text
//! 0xF7 | message id u32 (BE) | index u8 | count u8 | chunk
//! ```
//!
//! chitchat's messages start with its magic number `0xB053` (little-endian
//! `53 B0`), so the first byte tells the two apart. Reassembly is bounded:
//! at most [`MAX_PENDING`] partial messages (the oldest is dropped), at most
//! [`MAX_FRAGMENTS`] fragments each, and a partial message expires after
//! [`EXPIRY`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// First byte of a fragment payload.
pub const FRAGMENT_MARK: u8 = 0xF7;
/// Bytes of the fragment header.
pub const HEADER_LEN: usize = 1 + 4 + 1 + 1;
/// Most fragments one message may have.
pub const MAX_FRAGMENTS: usize = 16;
/// Most partial messages kept.
pub const MAX_PENDING: usize = 64;
/// A partial message older than this is dropped.
pub const EXPIRY: Duration = Duration::from_secs(10);

/// Why a fragment was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum FragmentError {
    /// Shorter than the header, or index/count out of range.
    #[error("malformed fragment header")]
    Header,
    /// Disagrees with earlier fragments of the same message.
    #[error("fragment inconsistent with the rest of its message")]
    Inconsistent,
}

/// Cuts `payload` into fragment payloads of at most `max_len` bytes each.
/// Returns `None` if it would take more than [`MAX_FRAGMENTS`].
pub fn split(payload: &[u8], max_len: usize, id: u32) -> Option<Vec<Vec<u8>>> {
    let chunk = max_len.checked_sub(HEADER_LEN).filter(|c| *c > 0)?;
    let count = payload.len().div_ceil(chunk).max(1);
    if count > MAX_FRAGMENTS {
        return None;
    }
    Some(
        payload
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut f = Vec::with_capacity(HEADER_LEN + c.len());
                f.push(FRAGMENT_MARK);
                f.extend_from_slice(&id.to_be_bytes());
                f.push(i as u8);
                f.push(count as u8);
                f.extend_from_slice(c);
                f
            })
            .collect(),
    )
}

struct Partial {
    chunks: Vec<Option<Vec<u8>>>,
    missing: usize,
    started: Instant,
}

/// Partial messages by sender and message id.
#[derive(Default)]
pub struct Reassembly {
    pending: HashMap<(SocketAddr, u32), Partial>,
}

impl Reassembly {
    /// Takes one fragment payload (starting with [`FRAGMENT_MARK`]) from
    /// `from`; returns the whole message once its last fragment arrives.
    pub fn push(
        &mut self,
        from: SocketAddr,
        fragment: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        let (&[mark, a, b, c, d, index, count], chunk) = fragment
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(FragmentError::Header)?;
        let (index, count) = (usize::from(index), usize::from(count));
        if mark != FRAGMENT_MARK || count == 0 || count > MAX_FRAGMENTS || index >= count {
            return Err(FragmentError::Header);
        }
        let id = u32::from_be_bytes([a, b, c, d]);
        self.pending
            .retain(|_, p| now.duration_since(p.started) < EXPIRY);
        if !self.pending.contains_key(&(from, id))
            && self.pending.len() >= MAX_PENDING
            && let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| *k)
        {
            self.pending.remove(&oldest);
        }
        let partial = self.pending.entry((from, id)).or_insert_with(|| Partial {
            chunks: vec![None; count],
            missing: count,
            started: now,
        });
        if partial.chunks.len() != count {
            self.pending.remove(&(from, id));
            return Err(FragmentError::Inconsistent);
        }
        if partial.chunks[index].is_none() {
            partial.chunks[index] = Some(chunk.to_vec());
            partial.missing -= 1;
        }
        if partial.missing > 0 {
            return Ok(None);
        }
        let done = self.pending.remove(&(from, id)).expect("present");
        Ok(Some(done.chunks.into_iter().flatten().flatten().collect()))
    }

    /// Partial messages held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    #[test]
    fn a_message_split_and_pushed_in_any_order_comes_back_whole() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let frags = split(&payload, 65_000, 9).unwrap();
        assert_eq!(frags.len(), 2);
        assert!(
            frags
                .iter()
                .all(|f| f.len() <= 65_000 && f[0] == FRAGMENT_MARK)
        );
        let mut r = Reassembly::default();
        let now = Instant::now();
        assert_eq!(r.push(from(1), &frags[1], now), Ok(None));
        assert_eq!(
            r.push(from(1), &frags[1], now),
            Ok(None),
            "duplicate ignored"
        );
        assert_eq!(r.push(from(1), &frags[0], now), Ok(Some(payload)));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn bad_headers_are_refused_and_state_stays_bounded() {
        let mut r = Reassembly::default();
        let now = Instant::now();
        for bad in [
            &[][..],
            &[FRAGMENT_MARK, 0, 0, 0, 1, 0][..],
            &[FRAGMENT_MARK, 0, 0, 0, 1, 2, 2, 9][..],
            &[FRAGMENT_MARK, 0, 0, 0, 1, 0, 0, 9][..],
            &[FRAGMENT_MARK, 0, 0, 0, 1, 0, 17, 9][..],
            &[0x53, 0, 0, 0, 1, 0, 2, 9][..],
        ] {
            assert_eq!(
                r.push(from(1), bad, now),
                Err(FragmentError::Header),
                "{bad:?}"
            );
        }
        // Fragments that never complete: the table stays bounded and expires.
        for id in 0..1000u32 {
            let f = split(&[1; 100], 60, id).unwrap();
            assert_eq!(r.push(from(2), &f[0], now), Ok(None));
        }
        assert_eq!(r.pending(), MAX_PENDING);
        let later = now + EXPIRY;
        let f = split(&[1; 100], 60, 5000).unwrap();
        r.push(from(2), &f[0], later).unwrap();
        assert_eq!(r.pending(), 1, "expired partials are dropped");
        // A count that disagrees with the first fragment drops the message.
        let mut a = split(&[1; 100], 60, 7).unwrap();
        r.push(from(3), &a[0], later).unwrap();
        a[1][6] = 3;
        assert_eq!(
            r.push(from(3), &a[1], later),
            Err(FragmentError::Inconsistent)
        );
        assert!(
            split(&[0; 100], HEADER_LEN, 1).is_none(),
            "no room for data"
        );
        assert!(split(&[0; 1000], 20, 1).is_none(), "too many fragments");
    }
}
