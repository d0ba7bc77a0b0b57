//! `Timeout`: what `poll` and friends accept, so that `Duration::ZERO` (ask and return), a bounded
//! `Duration`, and `None` (wait for ever) all read naturally at the call site.

use std::time::Duration;

/// How long a call may wait: `Duration`s and `Option<Duration>` convert into it (`None` = for ever).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use std::time::Duration;
/// let (a, _b) = shmwire::Pipe::new()?;
/// assert!(!a.poll(Duration::ZERO)?); // ask and return
/// assert!(!a.poll(Duration::from_millis(10))?); // wait at most 10 ms
/// assert!(!a.poll(shmwire::Timeout::ZERO)?);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeout(pub(crate) Option<Duration>);

impl Timeout {
    /// Do not wait: ask and return.
    pub const ZERO: Timeout = Timeout(Some(Duration::ZERO));
    /// Wait for ever.
    pub const NEVER: Timeout = Timeout(None);

    /// The bound, `None` for ever.
    pub fn duration(self) -> Option<Duration> {
        self.0
    }
}

impl From<Duration> for Timeout {
    fn from(d: Duration) -> Self {
        Timeout(Some(d))
    }
}

impl From<Option<Duration>> for Timeout {
    fn from(d: Option<Duration>) -> Self {
        Timeout(d)
    }
}
