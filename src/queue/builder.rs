//! `QueueBuilder`: the options of a new queue, and of a handle opened on a named one.
//!
//! What a named queue records for its openers to check: its kind and layout version, its shape
//! (slots, slot size, spill area: validated on open), the fingerprint of its type tag (in the
//! segment header: an opener with another tag is refused), and the fingerprint of its maker's `T`
//! as raw data (size and alignment: raw calls of an opener whose `T` differs are refused).

use super::rings::{Chain, FIRST_SLOTS};
use super::{
    PARAM_CAP, PARAM_GROWS, PARAM_POD, PARAM_SLOT, PARAM_SPILL_UNITS, Queue, QueueBlock,
    UNBOUNDED_CAPACITY,
};
use crate::error::{Error, Result};
use crate::ring::mpmc::SLOT_HEADER;
use crate::ring::spill;
use crate::segment::object::Object;
use crate::segment::{Kind, fingerprint_of_pod, fingerprint_of_tag};
use crate::wait::WaitStrategy;
use std::marker::PhantomData;
use std::sync::Arc;

/// Options for a [`Queue`]: made with [`Queue::builder`], ended by [`build`](Self::build) (a new
/// queue) or [`open`](Self::open) (a named queue another process made).
///
/// # Type tags
///
/// A named queue is opened by what matters for its items: the *type tag*, a name for
/// the encoding of the items (set with [`type_tag`](Self::type_tag), the same on both sides), and,
/// for raw items ([`put_pod`](Queue::put_pod)/[`get_pod`](Queue::get_pod)), the size and alignment
/// of `T`. The default tag is the name of `T` ([`std::any::type_name`]), which Rust keeps stable only
/// within one build: programs built apart (or by another compiler) should set a tag. An opener with
/// another tag gets [`Error::Incompatible`] ("this name holds another kind of object, another layout
/// version, or items of another type tag"); its raw calls get `Incompatible` when its `T` has
/// another size or alignment than the maker's. Equal tags are a promise, not a proof: an item that
/// still does not decode is [`Error::Decode`], taken with its bytes.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Queue, WaitStrategy};
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Order { id: u64, item: String }
///
/// let name = format!("orders-{}", std::process::id());
/// let q = Queue::<Order>::builder()
///     .name(&name)
///     .maxsize(100)
///     .type_tag("orders-v2")
///     .build()?;
/// let p = Process::fork(move || {
///     // Another program would open it the same way, with its own type for the orders.
///     let orders = Queue::<Order>::builder()
///         .name(&name)
///         .type_tag("orders-v2")
///         .wait_strategy(WaitStrategy::Sleep)
///         .open()
///         .unwrap();
///     orders.put(Order { id: 1, item: "tea".into() }).unwrap();
///     // The default tag (the type's name) is not the maker's:
///     assert!(matches!(Queue::<Order>::open(&name), Err(shmwire::Error::Incompatible)));
/// })?;
/// assert_eq!(q.get()?, Order { id: 1, item: "tea".into() });
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct QueueBuilder<T> {
    pub(super) maxsize: usize,
    pub(super) item_size: usize,
    pub(super) spill_size: usize,
    pub(super) name: Option<String>,
    pub(super) mode: Option<u32>,
    pub(super) tag: Option<String>,
    pub(super) wait: WaitStrategy,
    pub(super) _t: PhantomData<fn(T) -> T>,
}

impl<T> QueueBuilder<T> {
    /// The most items it holds; 0 (the default) means unbounded: the queue grows as items wait.
    /// (The maker's; an opener's is not used.)
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// The largest encoded item kept in a slot, in bytes (default 240); larger ones go to the spill
    /// area. (The maker's; an opener's is not used.)
    pub fn item_size(mut self, bytes: usize) -> Self {
        self.item_size = bytes;
        self
    }

    /// Bytes of the spill area, where items larger than the item size wait (default
    /// [`DEFAULT_SPILL_SIZE`](crate::DEFAULT_SPILL_SIZE)); it bounds the largest item and the bytes of
    /// large items waiting at once (a put waits for room as it waits for a free slot). 0: no spill
    /// area, a larger item is [`Error::TooLarge`]. (The maker's; an opener's is not used.)
    pub fn spill_size(mut self, bytes: usize) -> Self {
        self.spill_size = bytes;
        self
    }

    /// Who may open it by name besides this user: `0o660` also lets in the users of its group
    /// (the creating process's effective group), `0o600` (the default) nobody else; others never
    /// (any other mode is [`Error::Invalid`]). A process of another user
    /// opens such an object only if it is in that group; without this, it is refused.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The name other processes [`open`](Self::open) it by (none: shared with children forked
    /// later only); the name of the queue to open.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// The type tag: a name for the encoding of the items, which the maker and every opener give
    /// alike (`"orders-v2"`); by default the name of `T`, stable only within one build. See
    /// [type tags](QueueBuilder#type-tags).
    pub fn type_tag(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_owned());
        self
    }

    /// How this handle's (and its clones') blocked calls wait: `get`, `put`, `join` (default
    /// [`WaitStrategy::Adaptive`]). Each process's handle keeps its own: an opener chooses its own.
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    fn tag_fingerprint(&self) -> Result<u64> {
        match self.tag.as_deref() {
            None => Ok(fingerprint_of_tag(std::any::type_name::<T>())),
            Some("") => Err(Error::invalid(
                "the type tag is empty; give a name for the items' encoding, such as \"orders-v2\"",
            )),
            Some(tag) => Ok(fingerprint_of_tag(tag)),
        }
    }

    /// Creates the queue (named if [`name`](Self::name) was given: a name taken is
    /// [`Error::Exists`]).
    pub fn build(self) -> Result<Queue<T>> {
        let fingerprint = self.tag_fingerprint()?;
        self.mode.map_or(Ok(()), crate::segment::check_mode)?;
        let cap = if self.maxsize == 0 {
            FIRST_SLOTS as usize
        } else {
            self.maxsize
        };
        let slot = (self.item_size.max(8) + SLOT_HEADER).div_ceil(8) * 8;
        let units = self.spill_size.div_ceil(spill::UNIT);
        let bytes = cap
            .checked_mul(slot)
            .and_then(|b| b.checked_add(spill::area_bytes(units)))
            .filter(|&b| b <= 1 << 40)
            .ok_or_else(|| {
                Error::invalid(
                    "maxsize x item_size + spill_size is more than a queue can map (1 TiB); choose smaller ones",
                )
            })?;
        let mut p = [0u64; 6];
        p[PARAM_CAP] = cap as u64;
        p[PARAM_SLOT] = slot as u64;
        p[PARAM_SPILL_UNITS] = units as u64;
        p[PARAM_GROWS] = u64::from(self.maxsize == 0);
        p[PARAM_POD] = fingerprint_of_pod::<T>();
        let obj = Object::create_growable(
            Kind::Queue,
            fingerprint,
            p,
            bytes,
            self.name.as_deref(),
            self.maxsize == 0,
            units * spill::UNIT,
        )?;
        if let Some(m) = self.mode {
            obj.segment().set_mode(m)?;
        }
        Ok(Queue::with(obj, self.wait))
    }

    /// Opens the queue named by [`name`](Self::name), which another process made with the same
    /// [`type_tag`](Self::type_tag) (else [`Error::Incompatible`]; no such queue:
    /// [`Error::NotFound`]). Its shape is the maker's: this builder's `maxsize`, `item_size` and
    /// `spill_size` are not used; its wait strategy is this handle's.
    pub fn open(self) -> Result<Queue<T>> {
        let fingerprint = self.tag_fingerprint()?;
        let name = self.name.as_deref().ok_or_else(|| {
            Error::invalid("QueueBuilder::open has no name to open; call .name(..) first")
        })?;
        let obj: Object<QueueBlock> = Object::open(Kind::Queue, fingerprint, name)?;
        let p = obj.params();
        let (cap, slot, units) = (p[PARAM_CAP], p[PARAM_SLOT], p[PARAM_SPILL_UNITS]);
        let fits = cap > 0
            && p[PARAM_GROWS] <= 1
            && slot >= SLOT_HEADER as u64 + 8
            && slot % 8 == 0
            && units < 1 << 40
            && cap
                .checked_mul(slot)
                .and_then(|b| b.checked_add(spill::area_bytes(units as usize) as u64))
                .is_some_and(|b| b <= obj.data().1 as u64);
        if !fits {
            return Err(Error::Corrupt);
        }
        Ok(Queue::with(obj, self.wait))
    }
}

impl<T> Queue<T> {
    pub(super) fn with(obj: Object<QueueBlock>, wait: WaitStrategy) -> Queue<T> {
        let p = obj.params();
        let grows = p[PARAM_GROWS] == 1;
        let chain = Chain::new(
            p[PARAM_CAP],
            p[PARAM_SLOT],
            p[PARAM_SPILL_UNITS] as usize,
            obj.segment().header().size,
            grows,
            UNBOUNDED_CAPACITY as u64,
        );
        Queue {
            maxsize: if grows { 0 } else { p[PARAM_CAP] as usize },
            pod_fits: p[PARAM_POD] == fingerprint_of_pod::<T>(),
            obj,
            chain: Arc::new(chain),
            wait,
            _t: PhantomData,
        }
    }
}
