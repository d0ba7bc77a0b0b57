//! The walk run over a pickle before serde-pickle (1.2.0) decodes it: what the decoder would
//! build, without building it, so that a hostile pickle is refused before it costs anything.
//!
//! **What it mirrors.** serde-pickle parses in two steps. (1) `parse_value` runs the opcodes on a
//! stack of intermediate values: a MARK starts a new stack segment (`stacks`), a POP on an empty
//! segment pops the MARK instead, a PUT moves the stack top into the memo and leaves a `MemoRef`
//! in its place, a GET pushes a `MemoRef`, and the mutating opcodes (APPEND(S), SETITEM(S),
//! ADDITEMS) change the object the stack top resolves to, a memo's object included. DUP, a PUT
//! of a `MemoRef`, and the arguments of a call (REDUCE, STACK_GLOBAL) clone the memo's object
//! as it is then. (2) The final value is converted: a `MemoRef` anywhere inside becomes a full
//! copy of what the memo holds at the end (one on its own path is refused as recursive), and
//! sets and frozensets are built by *sorting* their keys.
//!
//! The walk runs the same opcodes, one by one, on value-less nodes: each node has its own cost
//! (a `Value` and its payload), a kind, flags for scalars ([`NAN`], [`FLOAT`], [`WIDE`]) and
//! children (nodes, or memo references resolved against the memo at the end, as the decoder
//! does). The stack, its segments and the memo behave as the decoder's; where the decoder
//! clones, the walk lets both places share one node, which can only make it count more (and
//! a pickle Python never writes, such as a DUP later put inside itself, may then be refused as
//! recursive). A mutating opcode grows the node the stack top resolves to, so every memo
//! reference to it, earlier or later, sees what it finally holds. What the decoder refuses the
//! walk may refuse too; what the walk cannot follow (an opcode it does not know, an argument it
//! cannot read) it refuses, saying where. It never lets through what it did not follow.
//!
//! At STOP the node graph is evaluated once, iteratively (memoized per node: linear): each
//! node's size (memo references counted as full copies), depth, and flags (of it and all it
//! holds). It refuses a pickle that holds a reference cycle (the decoder refuses those as
//! recursive); nests deeper than [`MAX_DEPTH`]; builds a set-like node (a set, a frozenset, or
//! what a call such as `set(...)` returns: its arguments may become a set's keys) holding keys
//! without a total order ([`unordered`]); or would take more than `max(64 MiB, 256 x len)`
//! bytes: twice what the parse holds (every node, every clone, [`MARK_SLOTS`] values per MARK;
//! the conversion clones memo objects again) plus the converted value.
//!
//! The walk's own memory and time are linear in the pickle's length: at most one node per
//! opcode, children lists hold what the stack held (each stack item moves into at most one
//! list; a call adds at most three).

use serde_pickle::Value;
use std::collections::HashMap;

/// What one value costs in memory before its bytes: a `Value` (strings', lists' and tuples' own
/// buffers add their bytes or their elements' `Value`s). The bound counts this, not one byte per
/// value: a pickle of `DUP`s of tuples of `None`s is small and builds many `Value`s.
const ITEM: u64 = std::mem::size_of::<Value>() as u64;

/// The values serde-pickle reserves for the stack segment each MARK starts (its
/// `Vec::with_capacity(128)`); a list or tuple built from the segment keeps that buffer.
const MARK_SLOTS: u64 = 128;

/// The most nesting a pickle may build. The decoder's conversion, its clones and the value's
/// drop recurse once or more per level, and a memo reference costs the conversion two frames more
/// ([`REF_LEVELS`]): at 1000 levels a 12 KB chain of references overflowed a thread's 2 MiB stack
/// (std's default for spawned threads) and aborted the process; 200 leaves room in a debug build.
pub(super) const MAX_DEPTH: u32 = 200;

/// The levels a memo reference counts for beyond its own (see [`MAX_DEPTH`]).
const REF_LEVELS: u32 = 2;

/// A B-tree node, about: a dict or set of one entry converts to a `BTreeMap`/`BTreeSet` with one
/// node of 11 slots (keys and values), some 720 bytes.
const TREE_NODE: u64 = 768;

/// What a node holds, anywhere within it: a NaN float, a float, an int beyond 2^53 in magnitude
/// (which `i as f64` rounds).
const NAN: u8 = 1;
const FLOAT: u8 = 2;
const WIDE: u8 = 4;

/// Whether a set of keys holding `f` would have no total order. serde-pickle builds a set by
/// sorting its keys in `HashableValue`'s order, which is not total for a NaN (less than
/// everything, and everything less than it) nor between floats and ints beyond 2^53: an int is
/// compared with a float as `i as f64`, which rounds it, so `2^53 + 1 == 2.0^53 == 2^53` while
/// `2^53 < 2^53 + 1` (beyond 64 bits, each may even be less than the other); std's sort may then
/// panic, or build a set that is wrong. A dict's keys are inserted one by one, which never
/// sorts: a NaN key is decoded.
fn unordered(f: u8) -> bool {
    f & NAN != 0 || f & (FLOAT | WIDE) == FLOAT | WIDE
}

/// The largest magnitude up to which every int is exactly a float.
const EXACT: u64 = 1 << 53;

/// Whether a LONG1/LONG4 int (little-endian two's complement) is beyond 2^53 in magnitude.
fn long_is_wide(digits: &[u8]) -> bool {
    if digits.len() > 8 {
        return true;
    }
    let neg = digits.last().is_some_and(|&b| b & 0x80 != 0);
    let mut le = [if neg { 0xff } else { 0 }; 8];
    le[..digits.len()].copy_from_slice(digits);
    i64::from_le_bytes(le).unsigned_abs() > EXACT
}

/// A stack item or a child: a node, or a reference to what memo entry `.0` holds.
#[derive(Clone, Copy)]
enum Slot {
    Node(u32),
    Ref(u32),
}

/// What a node is, as far as the bound cares.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A scalar, or a global (a name: no children).
    Scalar,
    /// A list or tuple.
    Container,
    /// A dict: converts to a B-tree.
    Map,
    /// A set, a frozenset, or what a call returns (`set(...)` among them): its keys are sorted.
    SetLike,
}

struct Node {
    /// Its own cost: [`ITEM`] and its payload's bytes.
    own: u64,
    kind: Kind,
    flags: u8,
    children: Vec<Slot>,
}

/// Checks that `p` builds, in serde-pickle, no more than `max(64 MiB, 256 x len)` bytes, nothing
/// nested deeper than [`MAX_DEPTH`], no reference cycle and no set whose keys lack a total order;
/// refuses what it cannot follow. The error says why, and where.
pub(super) fn bounded(p: &[u8]) -> Result<(), String> {
    if u32::try_from(p.len()).is_err() {
        return Err("it is longer than 4 GiB, more than the walk before decoding follows".into());
    }
    let mut w = Walk {
        p,
        at: 0,
        op_at: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        stacks: Vec::new(),
        memo: HashMap::new(),
        clones: Vec::new(),
        marks: 0,
    };
    let result = w.run()?;
    w.evaluate(result)
}

struct Walk<'a> {
    p: &'a [u8],
    /// The next byte to read, and where the current opcode began.
    at: usize,
    op_at: usize,
    nodes: Vec<Node>,
    /// The top stack segment, and those below it (one per MARK), as the decoder's.
    stack: Vec<Slot>,
    stacks: Vec<Vec<Slot>>,
    /// Memo id -> node (the decoder's memo holds the value itself).
    memo: HashMap<u32, u32>,
    /// Nodes the decoder clones while parsing (each clone costs what the node does).
    clones: Vec<u32>,
    marks: u64,
}

impl<'a> Walk<'a> {
    fn bad(&self, what: &str) -> String {
        format!(
            "{what} (opcode 0x{:02x} at byte {})",
            self.p[self.op_at], self.op_at
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let p = self.p;
        match self.at.checked_add(n).and_then(|end| p.get(self.at..end)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => Err(self.bad("it ends inside an opcode's argument")),
        }
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0, |a, &x| a << 8 | x as u64))
    }

    /// A text argument, as the decoder's `read_line`: up to `\n`, without it and one `\r`.
    fn line(&mut self) -> Result<&'a [u8], String> {
        let p = self.p;
        let Some(n) = p[self.at..].iter().position(|&b| b == b'\n') else {
            return Err(self.bad("it ends inside a text argument"));
        };
        let s = &p[self.at..self.at + n];
        self.at += n + 1;
        Ok(s.strip_suffix(b"\r").unwrap_or(s))
    }

    /// A text number, parsed as the decoder's `parse_ascii` does.
    fn text<T: std::str::FromStr>(&mut self) -> Result<T, String> {
        let line = self.line()?;
        self.number(line)
    }

    fn number<T: std::str::FromStr>(&self, line: &[u8]) -> Result<T, String> {
        let s = std::str::from_utf8(line).unwrap_or("");
        s.parse()
            .map_err(|_| self.bad("a text argument is not a number"))
    }

    /// A length-prefixed payload with a little-endian length of `n` bytes (`signed`: an i32).
    fn counted(&mut self, n: usize, signed: bool) -> Result<&'a [u8], String> {
        let len = self.uint(n)?;
        if signed && len >= 1 << 31 {
            return Err(self.bad("a length is negative"));
        }
        let len = usize::try_from(len).map_err(|_| self.bad("a length is too large"))?;
        self.take(len)
    }

    fn node(&mut self, own: u64, kind: Kind, flags: u8, children: Vec<Slot>) -> Slot {
        // At most one node per opcode: fewer than 2^32 (the length is checked).
        self.nodes.push(Node {
            own,
            kind,
            flags,
            children,
        });
        Slot::Node(self.nodes.len() as u32 - 1)
    }

    fn push(&mut self, own: u64, kind: Kind, flags: u8, children: Vec<Slot>) {
        let n = self.node(own, kind, flags, children);
        self.stack.push(n);
    }

    fn pop(&mut self) -> Result<Slot, String> {
        self.stack
            .pop()
            .ok_or_else(|| self.bad("it pops an empty stack"))
    }

    /// The items back to the last MARK; the segment below becomes the stack.
    fn pop_mark(&mut self) -> Result<Vec<Slot>, String> {
        match self.stacks.pop() {
            Some(below) => Ok(std::mem::replace(&mut self.stack, below)),
            None => Err(self.bad("it pops to a MARK there is not")),
        }
    }

    fn memo_node(&self, id: u32) -> Result<u32, String> {
        self.memo
            .get(&id)
            .copied()
            .ok_or_else(|| self.bad("it refers to a memo entry there is not"))
    }

    /// The node a slot stands for now; a memo reference is cloned by the decoder here.
    fn resolve(&mut self, s: Slot) -> Result<u32, String> {
        match s {
            Slot::Node(n) => Ok(n),
            Slot::Ref(id) => {
                let n = self.memo_node(id)?;
                self.clones.push(n);
                Ok(n)
            }
        }
    }

    /// The node the stack top stands for (the decoder's `top()`: what mutating opcodes change).
    fn top(&self) -> Result<u32, String> {
        match self.stack.last() {
            Some(&Slot::Node(n)) => Ok(n),
            Some(&Slot::Ref(id)) => self.memo_node(id),
            None => Err(self.bad("it changes the top of an empty stack")),
        }
    }

    /// APPEND(S), SETITEM(S), ADDITEMS: `items` join what the top stands for.
    fn extend_top(&mut self, items: Vec<Slot>) -> Result<(), String> {
        let t = self.top()?;
        self.nodes[t as usize].children.extend(items);
        Ok(())
    }

    /// PUT and its kin: the top moves into the memo; a reference to it takes its place.
    fn memoize(&mut self, id: u32) -> Result<(), String> {
        let top = self.pop()?;
        let n = self.resolve(top)?;
        self.memo.insert(id, n);
        self.stack.push(Slot::Ref(id));
        Ok(())
    }

    fn get(&mut self, id: u32) -> Result<(), String> {
        self.memo_node(id)?;
        self.stack.push(Slot::Ref(id));
        Ok(())
    }

    /// A scalar whose payload is `bytes` long.
    fn scalar(&mut self, bytes: usize, flags: u8) {
        self.push(ITEM + bytes as u64, Kind::Scalar, flags, Vec::new());
    }

    /// A call's result (REDUCE, the object opcodes): set-like, holding `args`.
    fn call(&mut self, args: Vec<Slot>) {
        self.push(ITEM, Kind::SetLike, 0, args);
    }

    /// Runs the opcodes to STOP, as the decoder's `parse_value`; what STOP pops.
    fn run(&mut self) -> Result<Slot, String> {
        use Kind::{Container, Map, SetLike};
        loop {
            self.op_at = self.at;
            let Some(&op) = self.p.get(self.at) else {
                return Err(format!("it ends before its STOP (at byte {})", self.at));
            };
            self.at += 1;
            match op {
                b'.' => return self.pop(), // STOP
                0x80 => {
                    self.take(1)?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'(' => {
                    self.marks += 1;
                    let below = std::mem::take(&mut self.stack);
                    self.stacks.push(below);
                }
                b'0' if self.stack.is_empty() => {
                    self.pop_mark()?; // POP of a MARK, as the decoder's
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?; // POP_MARK
                }
                b'2' => {
                    let t = self.top()?; // DUP: a clone of what the top stands for
                    self.clones.push(t);
                    self.stack.push(Slot::Node(t));
                }
                // The memo.
                b'p' => {
                    let id = self.text()?;
                    self.memoize(id)?;
                }
                b'q' => {
                    let id = self.uint(1)? as u32;
                    self.memoize(id)?;
                }
                b'r' => {
                    let id = self.uint(4)? as u32;
                    self.memoize(id)?;
                }
                0x94 => self.memoize(self.memo.len() as u32)?, // MEMOIZE
                b'g' => {
                    let id = self.text()?;
                    self.get(id)?;
                }
                b'h' => {
                    let id = self.uint(1)? as u32;
                    self.get(id)?;
                }
                b'j' => {
                    let id = self.uint(4)? as u32;
                    self.get(id)?;
                }
                // Scalars.
                b'N' | 0x88 | 0x89 => self.scalar(0, 0),
                b'I' => {
                    let line = self.line()?;
                    let wide = match line {
                        b"00" | b"01" => false, // a bool
                        _ => self.number::<i64>(line)?.unsigned_abs() > EXACT,
                    };
                    self.scalar(0, if wide { WIDE } else { 0 });
                }
                b'L' => {
                    let line = self.line()?;
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    // Beyond 2^53 unless it reads as a smaller i64 (a malformed one the
                    // decoder refuses).
                    let exact = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok())
                        .is_some_and(|i| i.unsigned_abs() <= EXACT);
                    let n = line.len();
                    self.scalar(n, if exact { 0 } else { WIDE });
                }
                b'F' => {
                    let x: f64 = self.text()?;
                    self.scalar(0, if x.is_nan() { FLOAT | NAN } else { FLOAT });
                }
                b'G' => {
                    let x = f64::from_bits(self.uint(8)?.swap_bytes()); // big-endian
                    self.scalar(0, if x.is_nan() { FLOAT | NAN } else { FLOAT });
                }
                b'J' | b'K' | b'M' => {
                    self.take(match op {
                        b'J' => 4,
                        b'K' => 1,
                        _ => 2,
                    })?;
                    self.scalar(0, 0); // at most 32 bits
                }
                0x8a | 0x8b => {
                    let digits = self.counted(if op == 0x8a { 1 } else { 4 }, op == 0x8b)?;
                    let (n, f) = (digits.len(), if long_is_wide(digits) { WIDE } else { 0 });
                    self.scalar(n, f);
                }
                // Strings and bytes: (length bytes, signed).
                b'C' | b'U' | 0x8c | b'B' | b'X' | b'T' | 0x8e | 0x8d | 0x96 => {
                    let (n, signed) = match op {
                        b'C' | b'U' | 0x8c => (1, false),
                        b'B' | b'X' => (4, false),
                        b'T' => (4, true),
                        _ => (8, false),
                    };
                    let n = self.counted(n, signed)?.len();
                    self.scalar(n, 0);
                }
                b'S' => {
                    let n = self.line()?.len();
                    self.scalar(n, 0);
                }
                b'V' => {
                    // A byte may become a two-byte char.
                    let n = self.line()?.len();
                    self.scalar(2 * n, 0);
                }
                // Containers.
                b')' | b']' => self.push(ITEM, Container, 0, Vec::new()),
                b'}' => self.push(ITEM, Map, 0, Vec::new()),
                0x8f => self.push(ITEM, SetLike, 0, Vec::new()), // EMPTY_SET
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize; // TUPLE1..3
                    let Some(from) = self.stack.len().checked_sub(n) else {
                        return Err(self.bad("it pops an empty stack"));
                    };
                    let items = self.stack.split_off(from);
                    self.push(ITEM, Container, 0, items);
                }
                b't' | b'l' => {
                    let items = self.pop_mark()?;
                    self.push(ITEM, Container, 0, items);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(ITEM, Map, 0, items);
                }
                0x91 => {
                    let items = self.pop_mark()?; // FROZENSET
                    self.push(ITEM, SetLike, 0, items);
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v])?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v])?;
                }
                b'e' | b'u' | 0x90 => {
                    let items = self.pop_mark()?; // APPENDS, SETITEMS, ADDITEMS
                    self.extend_top(items)?;
                }
                // Globals and calls.
                b'c' => {
                    self.line()?;
                    self.line()?;
                    self.scalar(0, 0);
                }
                0x93 => {
                    for _ in 0..2 {
                        let s = self.pop()?; // STACK_GLOBAL: names, cloned if memoized
                        self.resolve(s)?;
                    }
                    self.scalar(0, 0);
                }
                b'R' => {
                    // REDUCE: the arguments' tuple and the callable, cloned if memoized; the
                    // decoder uses the tuple's first or last two elements (cloned if memoized
                    // now), and `set(list)` makes a set of the list's elements.
                    let args = self.pop()?;
                    let args = self.resolve(args)?;
                    let global = self.pop()?;
                    self.resolve(global)?;
                    let all = &self.nodes[args as usize].children;
                    let used: Vec<Slot> = match all.len() {
                        0..=3 => all.clone(),
                        n => vec![all[0], all[n - 2], all[n - 1]],
                    };
                    let mut kept = Vec::with_capacity(used.len());
                    for s in used {
                        kept.push(Slot::Node(self.resolve(s)?));
                    }
                    self.call(kept);
                }
                b'i' => {
                    self.line()?;
                    self.line()?;
                    let args = self.pop_mark()?; // INST
                    self.call(args);
                }
                b'o' => {
                    let args = self.pop_mark()?; // OBJ
                    self.pop()?;
                    self.call(args);
                }
                0x81 => {
                    let args = self.pop()?; // NEWOBJ
                    self.pop()?;
                    self.call(vec![args]);
                }
                0x92 => {
                    let kwargs = self.pop()?; // NEWOBJ_EX
                    let args = self.pop()?;
                    self.pop()?;
                    self.call(vec![args, kwargs]);
                }
                b'b' => {
                    let state = self.pop()?; // BUILD: the state replaces the object
                    self.pop()?;
                    self.stack.push(state);
                }
                _ => return Err(self.bad("an opcode the decoder does not read")),
            }
        }
    }

    /// Evaluates every node once (children first, iteratively): refuses a cycle, a depth beyond
    /// [`MAX_DEPTH`], a set-like node holding [`unordered`] keys, and a total beyond the budget.
    fn evaluate(&self, result: Slot) -> Result<(), String> {
        let mut m: Vec<Metrics> = self.nodes.iter().map(Metrics::new).collect();
        let child = |s: Slot| match s {
            Slot::Node(n) => Ok(n as usize),
            Slot::Ref(id) => self
                .memo
                .get(&id)
                .map(|&n| n as usize)
                .ok_or_else(|| "it refers to a memo entry there is not".to_owned()),
        };
        // The path from a root: (node, its next child, whether it is a memo reference's).
        let mut path: Vec<(usize, usize, bool)> = Vec::new();
        for root in 0..m.len() {
            if m[root].state != NEW {
                continue;
            }
            m[root].state = OPEN;
            path.push((root, 0, false));
            while let Some(&(v, next, _)) = path.last() {
                if let Some(&s) = self.nodes[v].children.get(next) {
                    let top = path.len() - 1;
                    path[top].1 += 1;
                    let c = child(s)?;
                    let by_ref = matches!(s, Slot::Ref(_));
                    match m[c].state {
                        OPEN => {
                            return Err(
                                "it refers to itself (a value holding a memo reference to \
                                 itself, which the decoder refuses; or a copy put inside \
                                 what it copies, which the walk does not follow)"
                                    .into(),
                            );
                        }
                        NEW => {
                            // A path this long nests deeper than MAX_DEPTH.
                            if path.len() > MAX_DEPTH as usize {
                                return Err(format!("it nests deeper than {MAX_DEPTH} levels"));
                            }
                            m[c].state = OPEN;
                            path.push((c, 0, by_ref));
                        }
                        _ => Metrics::fold(&mut m, v, c, by_ref),
                    }
                    continue;
                }
                // All of v's children are in.
                let (_, _, by_ref) = path.pop().unwrap_or((v, 0, false));
                m[v].state = DONE;
                if m[v].depth > MAX_DEPTH {
                    return Err(format!("it nests deeper than {MAX_DEPTH} levels"));
                }
                if self.nodes[v].kind == Kind::SetLike && unordered(m[v].flags) {
                    return Err(unordered_error());
                }
                if let Some(&(u, _, _)) = path.last() {
                    Metrics::fold(&mut m, u, v, by_ref);
                }
            }
        }
        let own: u64 = self.nodes.iter().map(|n| n.own).sum();
        // What the decoder clones is a node's own tree (memo references stay references).
        let cloned = self
            .clones
            .iter()
            .fold(0u64, |a, &n| a.saturating_add(m[n as usize].shallow));
        let parse = own
            .saturating_add(cloned)
            .saturating_add(self.marks.saturating_mul(MARK_SLOTS * ITEM));
        // Converting, the decoder holds what it parsed, clones of memo objects on the path it
        // converts (no more than it parsed: distinct memo objects' trees are disjoint), and the
        // converted value, where each memo reference is a full copy.
        let total = parse
            .saturating_mul(2)
            .saturating_add(m[child(result)?].size);
        let budget = (64u64 << 20).max(256 * self.p.len() as u64);
        if total > budget {
            return Err(format!("it would build more than {budget} bytes"));
        }
        Ok(())
    }
}

const NEW: u8 = 0;
const OPEN: u8 = 1;
const DONE: u8 = 2;

/// What [`Walk::evaluate`] learns of a node.
struct Metrics {
    /// Bytes of the value it converts to (a memo reference: a full copy of its object).
    size: u64,
    /// Bytes of a clone of it while parsing (a memo reference: one `Value`).
    shallow: u64,
    depth: u32,
    /// Its flags and all it holds.
    flags: u8,
    state: u8,
}

impl Metrics {
    fn new(n: &Node) -> Metrics {
        // What the converted value's own buffers hold beyond a `Value` per element: a list's spare
        // capacity (it grew by doubling: up to one more per element); a B-tree's nodes (one at
        // least, about half full: one more key and value per entry).
        let k = n.children.len() as u64;
        let slack = match n.kind {
            Kind::Scalar => 0,
            Kind::Container => k * ITEM,
            Kind::Map | Kind::SetLike if k > 0 => TREE_NODE + 2 * k * ITEM,
            Kind::Map | Kind::SetLike => 0,
        };
        Metrics {
            size: n.own + slack,
            shallow: n.own,
            depth: (n.kind != Kind::Scalar) as u32,
            flags: n.flags,
            state: NEW,
        }
    }

    /// Child `c` (evaluated) into `v`.
    fn fold(m: &mut [Metrics], v: usize, c: usize, by_ref: bool) {
        let (size, depth, flags) = (m[c].size, m[c].depth, m[c].flags);
        let shallow = if by_ref { ITEM } else { m[c].shallow };
        let v = &mut m[v];
        v.size = v.size.saturating_add(size);
        v.shallow = v.shallow.saturating_add(shallow);
        v.depth = v.depth.max(depth + 1 + if by_ref { REF_LEVELS } else { 0 });
        v.flags |= flags;
    }
}

/// The error for a set refused by [`unordered`].
fn unordered_error() -> String {
    "it builds a set (or frozenset) holding a NaN, or both floats and ints beyond 2^53, \
     whose keys have no total order here"
        .to_owned()
}
