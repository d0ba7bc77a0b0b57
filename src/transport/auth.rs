//! The authkey handshake of Python's `multiprocessing.connection`, in both of its forms.
//!
//! A side that *delivers* a challenge sends `#CHALLENGE#` followed by a message, receives the
//! peer's answer, and replies `#WELCOME#` if it is right, `#FAILURE#` if not. A side that *answers*
//! receives the challenge, sends the answer, and expects `#WELCOME#`. A listener delivers, then
//! answers the client's challenge; a client answers, then delivers: both sides prove the key.
//!
//! * **Legacy** (Python up to 3.11): the message is 20 random bytes, the answer the raw 16-byte
//!   HMAC-MD5 of the message under the key.
//! * **Current** (Python 3.12 on): the message is `{sha256}` followed by 40 random bytes, the answer
//!   `{sha256}` followed by the HMAC-SHA256 of the whole message, prefix included. A prefix may
//!   name `md5`, `sha256` or `sha384` here (Python also allows `sha3_256` and `sha3_384`, which
//!   this crate refuses). An unprefixed 16-byte answer is taken as legacy HMAC-MD5 over the whole
//!   message: what a legacy peer sends back to a current challenge.
//!
//! We deliver the current form, so a legacy peer and a current one both pass, and answer whichever
//! form comes. Every message of the handshake is at most 256 bytes (a longer one is refused, as
//! Python refuses it), the MACs are compared in constant time (`hmac`'s `verify_slice`), and the
//! whole handshake runs under a deadline: a peer that stops part way times out.

use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::wait::Deadline;
use hmac::{Hmac, Mac};
use std::time::Duration;

pub(crate) const CHALLENGE: &[u8] = b"#CHALLENGE#";
pub(crate) const WELCOME: &[u8] = b"#WELCOME#";
pub(crate) const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes of a current challenge.
const NONCE: usize = 40;
/// Length of a legacy challenge's message and of a legacy (HMAC-MD5) answer.
const LEGACY_LENGTHS: [usize; 2] = [20, 16];
/// The longest handshake message accepted.
const MAX_MESSAGE: usize = 256;
/// The longest digest name between braces (`sha3_384`).
const MAX_NAME: usize = 8;

/// How long a handshake may take in all, when the call has no earlier deadline: a peer that stops
/// part way is given up after this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A digest the handshake can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn name(self) -> &'static [u8] {
        match self {
            Digest::Md5 => b"md5",
            Digest::Sha256 => b"sha256",
            Digest::Sha384 => b"sha384",
        }
    }

    fn mac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
            let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, msg),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, msg),
        }
    }

    /// Whether `tag` is the MAC of `msg` (constant time; a tag of another length is wrong).
    fn verify(self, key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
            let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            m.update(msg);
            m.verify_slice(tag).is_ok()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, msg, tag),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg, tag),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, msg, tag),
        }
    }
}

/// Why a handshake message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a challenge (`#CHALLENGE#` missing).
    NotAChallenge,
    /// Too short to be a challenge.
    Short,
    /// No known digest prefix, and not of a legacy length.
    Malformed,
    /// A digest Python allows that this crate does not compute.
    Unsupported(String),
}

/// Splits a challenge message or an answer into its digest (`None`: legacy, raw HMAC-MD5) and the
/// rest (Python's `_get_digest_name_and_payload`).
pub(crate) fn split(msg: &[u8]) -> Result<(Option<Digest>, &[u8]), Refused> {
    if LEGACY_LENGTHS.contains(&msg.len()) {
        return Ok((None, msg));
    }
    if msg.first() == Some(&b'{') {
        let end = msg.len().min(MAX_NAME + 2);
        if let Some(close) = msg[1..end].iter().position(|&b| b == b'}') {
            let name = &msg[1..1 + close];
            let rest = &msg[2 + close..];
            return match name {
                b"md5" => Ok((Some(Digest::Md5), rest)),
                b"sha256" => Ok((Some(Digest::Sha256), rest)),
                b"sha384" => Ok((Some(Digest::Sha384), rest)),
                b"sha3_256" | b"sha3_384" => Err(Refused::Unsupported(
                    String::from_utf8_lossy(name).into_owned(),
                )),
                _ => Err(Refused::Malformed),
            };
        }
    }
    Err(Refused::Malformed)
}

/// A challenge to deliver: `#CHALLENGE#{sha256}` and 40 random bytes (`legacy`: 20 random bytes,
/// no prefix, as Python 3.11 sends).
pub(crate) fn challenge(legacy: bool) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE];
    let n = if legacy { LEGACY_LENGTHS[0] } else { NONCE };
    random(&mut nonce[..n])?;
    let mut m = CHALLENGE.to_vec();
    if !legacy {
        m.extend_from_slice(b"{sha256}");
    }
    m.extend_from_slice(&nonce[..n]);
    Ok(m)
}

/// The answer to the challenge `msg` (with its `#CHALLENGE#`) under `key`.
pub(crate) fn answer(key: &[u8], msg: &[u8]) -> Result<Vec<u8>, Refused> {
    let body = msg.strip_prefix(CHALLENGE).ok_or(Refused::NotAChallenge)?;
    if body.len() < LEGACY_LENGTHS[0] {
        return Err(Refused::Short);
    }
    match split(body)?.0 {
        None => Ok(Digest::Md5.mac(key, body)),
        Some(d) => {
            let mut a = Vec::with_capacity(MAX_NAME + 2 + 48);
            a.push(b'{');
            a.extend_from_slice(d.name());
            a.push(b'}');
            a.extend_from_slice(&d.mac(key, body));
            Ok(a)
        }
    }
}

/// Whether `response` answers the challenge message `body` (without `#CHALLENGE#`) under `key`.
pub(crate) fn check(key: &[u8], body: &[u8], response: &[u8]) -> bool {
    match split(response) {
        Ok((d, mac)) => d.unwrap_or(Digest::Md5).verify(key, body, mac),
        Err(_) => false,
    }
}

/// Fills `buf` with random bytes from the kernel.
fn random(buf: &mut [u8]) -> Result<()> {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the valid range given.
        let n = unsafe { libc::getrandom(buf[off..].as_mut_ptr().cast(), buf.len() - off, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
            continue;
        }
        off += n as usize;
    }
    Ok(())
}

/// The handshake's deadline: the call's, or [`HANDSHAKE_TIMEOUT`] from now if that is earlier.
pub(crate) fn deadline(call: Deadline, timeout: Duration) -> Deadline {
    match call.remaining() {
        Some(left) if left < timeout => call,
        _ => Deadline::after(Some(timeout)),
    }
}

/// One handshake message (at most 256 bytes).
fn recv_small(conn: &Connection, deadline: Deadline) -> Result<Vec<u8>> {
    match conn.recv_bytes_limited(MAX_MESSAGE, deadline) {
        Err(Error::TooLarge) => Err(Error::AuthenticationFailed),
        r => r,
    }
}

/// Delivers a challenge and checks the answer (Python's `deliver_challenge`).
pub(crate) fn deliver(conn: &Connection, key: &[u8], deadline: Deadline) -> Result<()> {
    let msg = challenge(false)?;
    conn.send_bytes_at(&msg, deadline)?;
    let response = recv_small(conn, deadline)?;
    if check(key, &msg[CHALLENGE.len()..], &response) {
        conn.send_bytes_at(WELCOME, deadline)
    } else {
        let _ = conn.send_bytes_at(FAILURE, deadline);
        Err(Error::AuthenticationFailed)
    }
}

/// Answers the peer's challenge (Python's `answer_challenge`).
pub(crate) fn respond(conn: &Connection, key: &[u8], deadline: Deadline) -> Result<()> {
    let msg = recv_small(conn, deadline)?;
    let a = answer(key, &msg).map_err(|_| Error::AuthenticationFailed)?;
    conn.send_bytes_at(&a, deadline)?;
    if recv_small(conn, deadline)? == WELCOME {
        Ok(())
    } else {
        Err(Error::AuthenticationFailed)
    }
}

/// Checks an authkey as given: an empty one would authenticate nothing.
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(
            "an empty authkey authenticates nothing; use a key of some random bytes, or bind/connect without one",
        ));
    }
    Ok(())
}

/// Runs `bytes` through the handshake's parsers, as answers and as challenges: what the fuzz target
/// and the corpus replay test call. Never panics, whatever the bytes.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn __fuzz_handshake(bytes: &[u8]) -> bool {
    let (key, rest) = bytes.split_at(bytes.len().min(8));
    let _ = split(rest);
    let answered = answer(key, rest).ok();
    let mut ok = check(key, rest, rest);
    if let Some(a) = &answered {
        if let Some(body) = rest.strip_prefix(CHALLENGE) {
            // Our own answer to any challenge we answer must pass our own check.
            ok = check(key, body, a);
            assert!(ok, "an answer we made does not pass our check");
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_answer_and_check() {
        let key = b"secret";
        for legacy in [false, true] {
            let c = challenge(legacy).unwrap();
            let a = answer(key, &c).unwrap();
            assert_eq!(a.len(), if legacy { 16 } else { 8 + 32 });
            assert!(check(key, &c[CHALLENGE.len()..], &a));
            assert!(!check(b"other", &c[CHALLENGE.len()..], &a));
            // A legacy peer answers a current challenge with raw HMAC-MD5 over all of it.
            let raw = Digest::Md5.mac(key, &c[CHALLENGE.len()..]);
            assert!(check(key, &c[CHALLENGE.len()..], &raw));
        }
        assert_eq!(
            split(b"{sha3_256}abc"),
            Err(Refused::Unsupported("sha3_256".into()))
        );
        assert_eq!(
            split(b"{nope}abcdefghijklmnopqrstu"),
            Err(Refused::Malformed)
        );
        assert_eq!(answer(key, b"#CHALLENGE#short"), Err(Refused::Short));
        assert_eq!(answer(key, b"hello"), Err(Refused::NotAChallenge));
    }
}
