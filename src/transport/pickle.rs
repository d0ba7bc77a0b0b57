//! Python objects over any [`Connection`] (feature `pickle`): `send_py`/`recv_py` exchange them
//! with Python's `Connection.send`/`recv`, which pickle.
//!
//! Values are [`Value`], the value type of the `serde-pickle` crate, which keeps Python's types
//! apart: `None`, `bool`, `int` (an `i64`, or a [`BigInt`] past 64 bits), `float`, `str`, `bytes`,
//! `list`, `tuple` (a tuple stays a tuple), `dict` (keys of [`HashableValue`]), `set` and
//! `frozenset`. (The generic serde path of that crate would turn tuples into lists: it is not used
//! here.) `send`/`recv` keep the crate's own codec: this feature only adds.
//!
//! What goes out is pickle protocol 3 (every Python 3 reads it); what comes in may be any protocol
//! Python writes (its default is 4). A pickle that names a class or function (anything beyond
//! those types) is refused as [`Error::Decode`] (nothing is ever imported or run), and the
//! message stays for the next call. A dict's keys come back in order of their values (a
//! `BTreeMap`), not in insertion order.
//!
//! **Hostile pickles.** A pickle can refer to a value already built (its memo) any number of
//! times, and the value type holds copies, not references: a few hundred bytes could otherwise
//! ask for terabytes. Before decoding, the opcodes are run once the way serde-pickle runs them,
//! on value-less nodes (`walk`, which states what it mirrors), and a pickle is refused if what
//! it would build exceeds `max(64 MiB, 256 x its length)` bytes, nests deeper than 200 levels
//! (the conversion, clones and drop recurse: deeper could overflow a thread's stack), refers to
//! itself, or builds a set whose keys have no total order (a NaN; floats beside ints beyond 2^53),
//! which serde-pickle's sort could panic on. What the walk cannot follow is refused too.

use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::wait::Deadline;
use std::time::Duration;

mod walk;

pub use num_bigint::BigInt;
pub use serde_pickle::{HashableValue, Value};

/// Python's name for the type of `v` (`type(v).__name__`): `NoneType`, `bool`, `int`, `float`,
/// `str`, `bytes`, `list`, `tuple`, `dict`, `set` or `frozenset`.
///
/// ```
/// use shmwire::transport::pickle::{type_name, Value};
/// assert_eq!(type_name(&Value::Tuple(vec![Value::None])), "tuple");
/// assert_eq!(type_name(&Value::None), "NoneType");
/// ```
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::None => "NoneType",
        Value::Bool(_) => "bool",
        Value::I64(_) | Value::Int(_) => "int",
        Value::F64(_) => "float",
        Value::String(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Dict(_) => "dict",
        Value::Set(_) => "set",
        Value::FrozenSet(_) => "frozenset",
    }
}

/// Pickles `v` (protocol 3).
pub fn dumps(v: &Value) -> Result<Vec<u8>> {
    serde_pickle::value_to_vec(v, serde_pickle::SerOptions::new())
        .map_err(|e| Error::Encode(e.to_string()))
}

/// Unpickles `bytes` (any protocol) into a [`Value`]; anything but the types above is
/// [`Error::Decode`].
pub fn loads(bytes: &[u8]) -> Result<Value> {
    walk::bounded(bytes).map_err(|why| Error::Decode {
        reason: format!("refused before decoding: {why}"),
        bytes: Vec::new(),
    })?;
    // What the walk let through builds no set whose keys lack a total order (see `UNORDERED`):
    // serde-pickle's sort of them cannot panic.
    serde_pickle::value_from_slice(bytes, serde_pickle::DeOptions::new()).map_err(|e| {
        Error::Decode {
            reason: format!("not a pickle of plain Python values: {e}"),
            bytes: Vec::new(),
        }
    })
}

impl Connection {
    /// Sends a Python object, pickled: what Python's `Connection.recv()` receives (feature
    /// `pickle`).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::transport::pickle::Value;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// let v = Value::Tuple(vec![Value::I64(1), Value::String("two".into())]);
    /// a.send_py(&v)?;
    /// assert_eq!(b.recv_py()?, v); // a tuple stays a tuple
    /// # Ok(()) }
    /// ```
    pub fn send_py(&self, value: &Value) -> Result<()> {
        self.send_bytes(&dumps(value)?)
    }

    /// [`send_py`](Self::send_py), giving up with [`Error::Timeout`] after `timeout` (as
    /// [`send_bytes_timeout`](Self::send_bytes_timeout)).
    pub fn send_py_timeout(&self, value: &Value, timeout: Duration) -> Result<()> {
        self.send_bytes_timeout(&dumps(value)?, timeout)
    }

    /// Receives a Python object sent with Python's `Connection.send(obj)` (or
    /// [`send_py`](Self::send_py)). A message that is not a pickle of plain values is
    /// [`Error::Decode`], and stays (for [`recv_bytes`](Self::recv_bytes), say).
    pub fn recv_py(&self) -> Result<Value> {
        self.recv_map_at(Deadline::NEVER, loads)
    }

    /// [`recv_py`](Self::recv_py), giving up with [`Error::Timeout`] after `timeout` (nothing
    /// consumed).
    pub fn recv_py_timeout(&self, timeout: Duration) -> Result<Value> {
        self.recv_map_at(Deadline::after(Some(timeout)), loads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pickles (protocol 4, from Python) of sets whose keys serde-pickle's order does not order
    /// totally.
    const UNORDERED: &[(&str, &str)] = &[
        (
            "nan_set",
            "8004951c010000000000008f9428470000000000000000473ff000000000000047400000000000000047400800000000000047401000000000000047401400000000000047401800000000000047401c00000000000047402000000000000047402200000000000047402400000000000047402600000000000047402800000000000047402a00000000000047402c00000000000047402e00000000000047403000000000000047403100000000000047403200000000000047403300000000000047403400000000000047403500000000000047403600000000000047403700000000000047403800000000000047403900000000000047403a00000000000047403b00000000000047403c00000000000047403d000000000000477ff8000000000000902e",
        ),
        (
            "nan_frozenset_key",
            "8004954e000000000000007d94284b004b014b024b034b044b054b064b074b084b094b0a4b0b4b0c4b0d4b0e4b0f4b104b114b124b134b144b154b164b174b184b194b1a4b1b4b1c4b1d477ff800000000000091944b01732e",
        ),
        (
            "big_and_float",
            "80049549020000000000008f94284746293e5939a08cea4746393e5939a08cea474642eec2eb3869b08a090000000000000000018a090100000000000000018a090200000000000000018a090300000000000000018a090400000000000000018a090500000000000000018a090600000000000000018a090700000000000000018a090800000000000000018a090900000000000000018a090a00000000000000018a090b00000000000000018a090c00000000000000018a090d00000000000000018a090e00000000000000018a090f00000000000000018a091000000000000000018a091100000000000000018a091200000000000000018a0913000000000000000147465c662460d49e8747465f8def8808b0244746615add579e60e1474662eec2eb3869b047466482a87ed2727e474666168e126c7b4d474667aa73a606841b4746693e5939a08cea47466ad23ecd3a95b947466c662460d49e8747466dfa09f46ea75647466f8def8808b024474656168e126c7b4d47464f8def8808b02447c642eec2eb3869b047c66f8def8808b02447c66dfa09f46ea75647c66c662460d49e8747c66ad23ecd3a95b947c6693e5939a08cea47c667aa73a606841b47c666168e126c7b4d47c66482a87ed2727e47c662eec2eb3869b047c6615add579e60e147c65f8def8808b02447c65c662460d49e8747c6593e5939a08cea47c656168e126c7b4d47c652eec2eb3869b047c64f8def8808b0244746593e5939a08cea47c6493e5939a08cea4746493e5939a08cea474652eec2eb3869b047c6393e5939a08cea47c6293e5939a08cea902e",
        ),
        (
            "i64_rounding",
            "80049521020000000000008f94288a07000000000000208a07010000000000208a07020000000000208a07030000000000208a07040000000000208a07050000000000208a07060000000000208a07070000000000208a07080000000000208a07090000000000208a070a0000000000208a070b0000000000208a070c0000000000208a070d0000000000208a070e0000000000208a070f0000000000208a07100000000000208a07110000000000208a07120000000000208a07130000000000208a07140000000000208a07150000000000208a07160000000000208a07170000000000208a07180000000000208a07190000000000208a071a0000000000208a071b0000000000208a071c0000000000208a071d0000000000208a071e0000000000208a071f0000000000208a07200000000000208a07210000000000208a07220000000000208a07230000000000208a07240000000000208a07250000000000208a07260000000000208a072700000000002047434000000000001447434000000000001547434000000000001647434000000000001747434000000000001847434000000000001947434000000000001a47434000000000001b47434000000000001c47434000000000001d47434000000000001e47434000000000001f474340000000000020474340000000000021474340000000000022474340000000000023474340000000000024474340000000000025474340000000000026474340000000000027902e",
        ),
    ];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    thread_local! {
        static PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f`, recording whether anything panicked on this thread meanwhile (caught or not: a
    /// `panic = "abort"` build would have aborted there).
    fn panics_in(f: impl FnOnce()) -> bool {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICKED.with(|p| p.set(true));
                prev(info);
            }));
        });
        PANICKED.with(|p| p.set(false));
        f();
        PANICKED.with(|p| p.replace(false))
    }

    fn nan() -> Vec<u8> {
        let mut v = vec![b'G'];
        v.extend_from_slice(&f64::NAN.to_be_bytes());
        v
    }

    fn float(x: f64) -> Vec<u8> {
        let mut v = vec![b'G'];
        v.extend_from_slice(&x.to_be_bytes());
        v
    }

    /// LONG1 of `i`.
    fn long(i: i64) -> Vec<u8> {
        let mut v = vec![0x8a, 8];
        v.extend_from_slice(&i.to_le_bytes());
        v
    }

    /// 40 floats, every third a NaN: keys serde-pickle's sort may panic on.
    fn floats_with_nans() -> Vec<u8> {
        (0..40)
            .flat_map(|i| if i % 3 == 0 { nan() } else { float(i as f64) })
            .collect()
    }

    /// Decodes `p`, asserting there is no panic, and that it is refused before decoding, saying
    /// something containing `why`.
    fn assert_refused(what: &str, p: &[u8], why: &str) {
        let mut got = None;
        let panicked = panics_in(|| got = Some(loads(p)));
        assert!(!panicked, "{what}: the decoder panicked");
        match got.unwrap() {
            Ok(v) => panic!("{what}: decoded ({})", type_name(&v)),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("refused before decoding"), "{what}: {e}");
                assert!(e.contains(why), "{what}: {e}");
            }
        }
    }

    /// 64 KiB of bytes (BINBYTES).
    fn big_bytes() -> Vec<u8> {
        let mut b = vec![b'B'];
        b.extend_from_slice(&(64u32 << 10).to_le_bytes());
        b.extend(std::iter::repeat_n(0u8, 64 << 10));
        b
    }

    #[test]
    fn a_text_memo_id_is_read_as_the_decoder_reads_it() {
        // PUT "0\n" is memo id 0 to serde-pickle: BINGET 0 finds it.
        let mut p = b"\x80\x02Np0\n0h\x00(".to_vec();
        p.extend(floats_with_nans());
        p.extend_from_slice(b"\x91.");
        assert_refused("text PUT, BINGET, then a frozenset of NaNs", &p, "NaN");
        // Text GET of a text PUT.
        let mut p = b"\x80\x02Np0\n0g0\n0(".to_vec();
        p.extend(floats_with_nans());
        p.extend_from_slice(b"\x91.");
        assert_refused("text PUT, text GET, then a frozenset of NaNs", &p, "NaN");
        // 64 KiB of bytes, put as text, referred to 2000 times: 128 MiB from 70 KB.
        let mut p = b"\x80\x02".to_vec();
        p.extend(big_bytes());
        p.extend_from_slice(b"p0\n0(");
        for _ in 0..2000 {
            p.extend_from_slice(b"h\x00");
        }
        p.extend_from_slice(b"l.");
        assert_refused(
            "text PUT of bytes referred to 2000 times",
            &p,
            "would build more than",
        );
    }

    #[test]
    fn pop_on_an_empty_segment_pops_its_mark() {
        // MARK None MARK POP (pops the second MARK, as serde-pickle does) POP_MARK (the first),
        // then a frozenset of NaNs.
        let mut p = b"\x80\x02(N(01(".to_vec();
        p.extend(floats_with_nans());
        p.extend_from_slice(b"\x91.");
        assert_refused("POP of a MARK, then a frozenset of NaNs", &p, "NaN");
    }

    #[test]
    fn a_set_mutated_after_it_was_memoized_is_checked() {
        // set(list): the list, memoized empty, gets its NaNs after; REDUCE finds it by BINGET.
        let mut p = b"\x80\x02cbuiltins\nset\n]\x94(".to_vec();
        p.extend(floats_with_nans());
        p.extend_from_slice(b"e0h\x00\x85R.");
        assert_refused("set(list) of a list memoized before its NaNs", &p, "NaN");
        // A set memoized, floats added; then (through BINGET) ints beyond 2^53.
        let mut p = b"\x80\x04\x8f\x94(".to_vec();
        for i in 0..30 {
            p.extend(float(9007199254740992.0 + 2.0 * i as f64));
        }
        p.extend_from_slice(b"\x900h\x00(");
        for i in 0..30 {
            p.extend(long(9007199254740993 + 2 * i));
        }
        p.extend_from_slice(b"\x90.");
        assert_refused("a memoized set: floats, then ints beyond 2^53", &p, "2^53");
    }

    #[test]
    fn a_memoized_list_grown_after_its_references_is_counted() {
        // An empty list memoized, referred to 2000 times from a list; then 64 KiB of bytes
        // appended to it (through BINGET): 128 MiB from 70 KB.
        let mut p = b"\x80\x04]\x94(".to_vec();
        for _ in 0..2000 {
            p.extend_from_slice(b"h\x00");
        }
        p.extend_from_slice(b"lh\x00");
        p.extend(big_bytes());
        p.extend_from_slice(b"a0.");
        assert_refused(
            "a memoized list grown after 2000 references",
            &p,
            "would build more than",
        );
    }

    /// Decodes `p` on a thread with std's default 2 MiB stack (any thread a program spawns), as a
    /// debug build: a recursion the walk lets through overflows it, and the process aborts.
    fn loads_on_a_small_stack(p: Vec<u8>) -> Result<Value> {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || loads(&p))
            .unwrap()
            .join()
            .unwrap()
    }

    /// A chain of `n` lists, each holding a memo reference to the one before (about 12 bytes a
    /// level): the decoder's conversion recurses through every reference.
    fn memo_chain(n: u32) -> Vec<u8> {
        let mut p = vec![0x80, 4, b']', 0x94, b'0'];
        for i in 1..n {
            p.push(b']');
            p.push(b'j');
            p.extend_from_slice(&(i - 1).to_le_bytes());
            p.extend_from_slice(&[b'a', 0x94, b'0']);
        }
        p.push(b'j');
        p.extend_from_slice(&(n - 1).to_le_bytes());
        p.push(b'.');
        p
    }

    fn nested_lists(n: usize) -> Vec<u8> {
        let mut p = vec![0x80, 4];
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        p
    }

    #[test]
    fn nesting_that_would_overflow_a_threads_stack_is_refused() {
        // Both were let through at 1000 levels and aborted the process on a 2 MiB stack (the
        // memo chain from 300 levels in a debug build).
        for (what, p) in [
            ("memo chain", memo_chain(1000)),
            ("lists", nested_lists(1000)),
        ] {
            let e = loads_on_a_small_stack(p).unwrap_err();
            assert!(e.to_string().contains("nests deeper"), "{what}: {e}");
        }
        // What programs nest decodes.
        assert!(loads_on_a_small_stack(nested_lists(150)).is_ok());
        assert!(loads_on_a_small_stack(memo_chain(50)).is_ok());
    }

    #[test]
    fn the_trees_of_dicts_and_sets_are_counted() {
        // A list of 100,000 references to `{None: None}`: each converts to a B-tree of its own
        // (a node of about 720 bytes for one entry): 78 MB from a 200 KB pickle whose bound is
        // 64 MiB. It was let through, counted as two values per entry.
        let mut p = vec![0x80, 4, b'}', b'N', b'N', b's', 0x94, b'0', b']', b'('];
        for _ in 0..100_000 {
            p.extend_from_slice(&[b'h', 0]);
        }
        p.extend_from_slice(b"e.");
        let e = loads(&p).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[test]
    fn a_mark_bomb_is_refused() {
        // serde-pickle gives every MARK a new stack of 128 values: 30,000 MARKs (30 KB) would
        // take over 100 MiB.
        let mut p = b"\x80\x04".to_vec();
        p.extend(std::iter::repeat_n(b'(', 30_000));
        p.extend_from_slice(b"N.");
        assert_refused("30,000 MARKs", &p, "would build more than");
    }

    #[test]
    fn sets_of_keys_without_a_total_order_decode_without_a_panic() {
        let mut inputs: Vec<(&str, Vec<u8>)> =
            UNORDERED.iter().map(|(n, h)| (*n, unhex(h))).collect();
        inputs.push((
            "regress-nan-in-a-set",
            include_bytes!("../../fuzz/corpus/pickle/regress-nan-in-a-set").to_vec(),
        ));
        for (what, bytes) in &inputs {
            let mut got = None;
            let panicked = panics_in(|| got = Some(loads(bytes)));
            assert!(!panicked, "{what}: the decoder panicked ({got:?})");
            // Decoded, or refused with a clear reason; never a panic.
            if let Some(Err(e)) = &got {
                assert!(matches!(e, Error::Decode { .. }), "{what}: {e}");
            }
        }
        // A NaN in a set is refused, saying why; sets of plain floats and a NaN as a dict key
        // (inserted one by one, never sorted) decode.
        let e = loads(&unhex(UNORDERED[0].1)).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        // Ints beyond 2^53 beside floats: `i as f64` rounds them, and the order stops being
        // transitive (2^53 + 1 == 2.0^53 == 2^53 < 2^53 + 1): refused, not sorted wrongly.
        for (what, hex) in &UNORDERED[2..] {
            let e = loads(&unhex(hex)).unwrap_err();
            assert!(e.to_string().contains("2^53"), "{what}: {e}");
        }
        let floats: std::collections::BTreeSet<HashableValue> = (0..40)
            .map(|i| HashableValue::F64(i as f64 / 3.0))
            .collect();
        let v = Value::Set(floats);
        assert_eq!(loads(&dumps(&v).unwrap()).unwrap(), v);
        // Ints up to 2^53 beside floats are exact as floats: {1, 2.5, 2**53, -2**53} decodes.
        let exact = unhex(
            "80049522000000000000008f94288a07000000000000204b014740040000000000008a07000000000000e0902e",
        );
        assert!(matches!(loads(&exact), Ok(Value::Set(s)) if s.len() == 4));
        let nan_key = unhex("8004950f000000000000007d94477ff80000000000004b01732e"); // {nan: 1}
        assert!(matches!(loads(&nan_key), Ok(Value::Dict(d)) if d.len() == 1));
    }

    #[test]
    fn what_the_walk_cannot_follow_is_refused_saying_where() {
        // Each of these serde-pickle refuses too; the walk says why, and where, before it.
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "an unknown opcode",
                b"\x80\x04N\xff.",
                "opcode 0xff at byte 3",
            ),
            ("PERSID", b"\x80\x04P1\n.", "does not read"),
            ("a truncated argument", b"\x80\x04J\x01\x02", "ends inside"),
            (
                "a text memo id that is no number",
                b"Np0x\n.",
                "not a number",
            ),
            (
                "a GET of nothing",
                b"\x80\x04h\x05.",
                "memo entry there is not",
            ),
            (
                "POP_MARK without a MARK",
                b"\x80\x04N1.",
                "MARK there is not",
            ),
            ("no STOP", b"\x80\x04N", "before its STOP"),
            (
                "a negative length",
                b"\x80\x02T\xff\xff\xff\xff.",
                "negative",
            ),
            // l = []; l.append(l): the decoder refuses it as recursive.
            (
                "a list holding itself",
                b"\x80\x04]\x94h\x00a.",
                "refers to itself",
            ),
        ];
        for (what, p, why) in cases {
            assert_refused(what, p, why);
        }
    }

    #[test]
    fn python_pickles_of_plain_values_decode() {
        // Made by python3: x = [1, 2, 3]; v = [1, "two", (3.5, None, True), {"k": [x, x]},
        // {1, 2, 3}, frozenset({"a", "b"}), b"by", 2**70, -5]; pickle.dumps(v, protocol).hex()
        // (protocol 0 without the bytes: it spells them as a call of `_codecs.encode`).
        use HashableValue as H;
        let s = |s: &str| Value::String(s.into());
        let x = || Value::List(vec![Value::I64(1), Value::I64(2), Value::I64(3)]);
        let mixed = |bytes: bool| {
            let mut v = vec![
                Value::I64(1),
                s("two"),
                Value::Tuple(vec![Value::F64(3.5), Value::None, Value::Bool(true)]),
                Value::Dict([(H::String("k".into()), Value::List(vec![x(), x()]))].into()),
                Value::Set([H::I64(1), H::I64(2), H::I64(3)].into()),
                Value::FrozenSet([H::String("a".into()), H::String("b".into())].into()),
                Value::Bytes(b"by".to_vec()),
                Value::Int(BigInt::from(1u128 << 70)),
                Value::I64(-5),
            ];
            if !bytes {
                v.remove(6);
            }
            Value::List(v)
        };
        let cases = [
            (
                "protocol 4",
                "8004955b000000000000005d94284b018c0374776f9447400c0000000000004e8887947d948c016b945d94285d94284b014b024b0365680665738f94284b014b024b0390288c0161948c016294919443026279948a090000000000000000404afbffffff652e",
                mixed(true),
            ),
            (
                "protocol 0 (text PUT and GET)",
                "286c70300a49310a615674776f0a70310a612846332e350a4e4930310a7470320a61286470330a566b0a70340a286c70350a286c70360a49310a6149320a6149330a616167360a617361635f5f6275696c74696e5f5f0a7365740a70370a28286c70380a49310a6149320a6149330a617470390a527031300a61635f5f6275696c74696e5f5f0a66726f7a656e7365740a7031310a28286c7031320a56610a7031330a6156620a7031340a61747031350a527031360a614c313138303539313632303731373431313330333432344c0a61492d350a612e",
                mixed(false),
            ),
            (
                "protocol 2 (sets and bytes as calls)",
                "80025d7100284b01580300000074776f710147400c0000000000004e888771027d710358010000006b71045d7105285d7106284b014b024b036568066573635f5f6275696c74696e5f5f0a7365740a71075d7108284b014b024b036585710952710a635f5f6275696c74696e5f5f0a66726f7a656e7365740a710b5d710c28580100000061710d580100000062710e6585710f527110635f636f646563730a656e636f64650a711158020000006279711258060000006c6174696e3171138671145271158a090000000000000000404afbffffff652e",
                mixed(true),
            ),
            (
                // {"s": {"x", "y"}, "t": (x, x, [x])}
                "protocol 3",
                "80037d7100285801000000737101636275696c74696e730a7365740a71025d710328580100000078710458010000007971056585710652710758010000007471085d7109284b014b024b036568095d710a68096187710b752e",
                Value::Dict(
                    [
                        (
                            H::String("s".into()),
                            Value::Set([H::String("x".into()), H::String("y".into())].into()),
                        ),
                        (
                            H::String("t".into()),
                            Value::Tuple(vec![x(), x(), Value::List(vec![x()])]),
                        ),
                    ]
                    .into(),
                ),
            ),
            (
                // [bytearray(b"ab"), {2**53, 1.5}]: 2^53 is exact as a float.
                "protocol 5",
                "80059527000000000000005d94289602000000000000006162948f94288a0700000000000020473ff800000000000090652e",
                Value::List(vec![
                    Value::Bytes(b"ab".to_vec()),
                    Value::Set([H::I64(1 << 53), H::F64(1.5)].into()),
                ]),
            ),
        ];
        for (what, hex, want) in cases {
            match loads(&unhex(hex)) {
                Ok(v) => assert_eq!(v, want, "{what}"),
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }

    #[test]
    fn a_memo_bomb_is_refused_before_decoding() {
        // [x, x] of the previous level, 40 levels deep: 2^40 copies from a few hundred bytes.
        let mut p = vec![0x80, 4, b']', 0x94];
        for i in 0..40u8 {
            p.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', 0x94]);
        }
        p.push(b'.');
        let e = loads(&p).unwrap_err();
        assert!(e.to_string().contains("refused before decoding"), "{e}");
        // Deep nesting.
        let mut deep = vec![0x80, 4];
        deep.extend(std::iter::repeat_n(b']', 5000));
        deep.extend(std::iter::repeat_n(b'a', 4999));
        deep.push(b'.');
        assert!(loads(&deep).is_err());
        // A plain value passes.
        let v = Value::List(vec![Value::I64(1); 3]);
        assert_eq!(loads(&dumps(&v).unwrap()).unwrap(), v);
    }
}
