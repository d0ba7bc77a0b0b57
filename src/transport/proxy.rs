//! One served object's client end: a [`Proxy`] opens a connection of its own to the server, opens
//! the object on it, and makes calls (a request, then its one answer). The remote handles
//! ([`RemoteQueue`](crate::RemoteQueue), [`RemoteDict`](crate::RemoteDict),
//! [`RemoteList`](crate::RemoteList)) are typed fronts over it.

use super::remote::{QUICK, Remote};
use super::server::{ObjKind, Op, Reply, Request};
use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::wait::Deadline;
use std::sync::Mutex;
use std::time::Duration;

/// How long past a call's own timeout its answer may take to arrive (the network's share).
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// A served object's connection, opened on first use and again after a failure.
pub(crate) struct Proxy {
    remote: Remote,
    kind: ObjKind,
    name: String,
    /// The bound of every call that waits on the object (`None`: as long as the local call).
    timeout: Option<Duration>,
    conn: Mutex<Option<Connection>>,
}

/// How a call failed.
enum Failed {
    /// The server answered with an error (the connection is fine).
    Answer(Error),
    /// The connection failed, or the answer did not come in time.
    Lost(Error),
}

impl Proxy {
    /// Opens `name` (of `kind`) at once, so a wrong name or kind is an error here.
    pub(crate) fn open(
        remote: &Remote,
        kind: ObjKind,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Proxy> {
        let p = Proxy {
            remote: remote.clone(),
            kind,
            name: name.to_owned(),
            timeout,
            conn: Mutex::new(None),
        };
        p.with_conn(|_| Ok(()))?;
        Ok(p)
    }

    /// The same object, with every call that waits bounded by `timeout` (its own connection,
    /// opened on first use).
    pub(crate) fn with_timeout(&self, timeout: Option<Duration>) -> Proxy {
        Proxy {
            remote: self.remote.clone(),
            kind: self.kind,
            name: self.name.clone(),
            timeout,
            conn: Mutex::new(None),
        }
    }

    /// The bound of the calls that wait.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    pub(crate) fn describe(&self, what: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(what)
            .field("address", &self.remote.address())
            .field("name", &self.name)
            .finish()
    }

    /// Runs `f` on the connection, opening it (and the object) first if needed; a connection that
    /// failed (not an error the server answered with) is dropped, so the next call opens anew.
    fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> Result<R, Failed>) -> Result<R> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let c = match slot.take() {
            Some(c) => c,
            None => {
                let c = self.remote.dial()?;
                let deadline = Deadline::after(Some(QUICK));
                send_within(
                    &c,
                    &Request::Open {
                        kind: self.kind,
                        name: self.name.clone(),
                    },
                    deadline,
                )?;
                match c.recv_timeout::<Reply>(deadline.remaining().unwrap_or_default())? {
                    Reply::Ok(_) => {}
                    Reply::Err(e) => return Err(e.into()),
                }
                c
            }
        };
        match f(&c) {
            Ok(r) => {
                *slot = Some(c);
                Ok(r)
            }
            Err(Failed::Answer(e)) => {
                *slot = Some(c);
                Err(e)
            }
            // Out of step (a late answer could be taken for the next call's), or lost: the next
            // call starts afresh.
            Err(Failed::Lost(e)) => Err(e),
        }
    }

    /// One call with the proxy's own bound.
    pub(crate) fn call(&self, op: Op, arg: Vec<u8>) -> Result<Vec<u8>> {
        self.call_within(
            op,
            if op.waits() {
                self.timeout
            } else {
                Some(Duration::ZERO)
            },
            arg,
        )
    }

    /// One call: `timeout` is the server's wait (`None`: for ever). The request's sending and the
    /// answer's wait share one bound, `timeout` plus [`GRACE`] (a server that stopped reading
    /// cannot hold a large request's send for longer).
    pub(crate) fn call_within(
        &self,
        op: Op,
        timeout: Option<Duration>,
        arg: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let wait = match (op.waits(), timeout) {
            (true, None) => None,
            (true, Some(d)) => Some(d.saturating_add(GRACE)),
            (false, _) => Some(QUICK),
        };
        self.with_conn(|c| {
            let deadline = Deadline::after(wait);
            let request = Request::Call {
                op,
                timeout_us: timeout.map(|d| d.as_micros().min(u64::MAX as u128) as u64),
                arg,
            };
            send_within(c, &request, deadline).map_err(Failed::Lost)?;
            let reply = match deadline.remaining() {
                None => c.recv::<Reply>(),
                Some(d) => c.recv_timeout::<Reply>(d),
            };
            match reply {
                Ok(Reply::Ok(v)) => Ok(v),
                Ok(Reply::Err(e)) => Err(Failed::Answer(e.into())),
                Err(e) => Err(Failed::Lost(e)),
            }
        })
    }
}

/// Sends `request` within `deadline` (unbounded: blocks as long as the send does). Over a socket, a
/// request of which part left when the time ran out counts as sent (the rest goes first, with the
/// wait for its answer), so the stream stays in step.
fn send_within(c: &Connection, request: &Request, deadline: Deadline) -> Result<()> {
    match deadline.remaining() {
        None => c.send(request),
        Some(d) => c.send_timeout(request, d),
    }
}
